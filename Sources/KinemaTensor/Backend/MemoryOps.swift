/// Allocation, host transfer, casts and layout changes.
public protocol MemoryOps: AnyObject {
    var device: Device { get }

    /// Uninitialised memory (the CPU backend fills it with NaN in debug builds so an unwritten element shows).
    func empty(_ shape: [Int], dtype: DType) -> Tensor
    func zeros(_ shape: [Int], dtype: DType) -> Tensor
    func fill(_ tensor: Tensor, with value: Double)
    /// Fills the elements `ranges` (flat indices, counted from the tensor's start) of a contiguous tensor with
    /// `value`, the rest untouched: one pass for many small pieces (the gradients the optimizer clears while it
    /// leaves the larger ones to be overwritten).
    func fill(_ tensor: Tensor, ranges: [Range<Int>], with value: Double)

    /// Host values to a new tensor of `dtype` (rounded to nearest even for bf16/f16).
    func upload(_ values: [Float], shape: [Int], dtype: DType) -> Tensor
    func upload(_ values: [Double], shape: [Int], dtype: DType) -> Tensor
    func upload(_ values: [Int32], shape: [Int]) -> Tensor
    /// Raw little-endian bytes, already in `dtype` (safetensors payloads).
    func upload(bytes: UnsafeRawBufferPointer, shape: [Int], dtype: DType) -> Tensor

    /// The tensor's values as host floats / doubles (any floating dtype), or its raw bytes.
    func download(_ tensor: Tensor) -> [Float]
    func downloadDouble(_ tensor: Tensor) -> [Double]
    func downloadBytes(_ tensor: Tensor) -> [UInt8]

    /// Copies `source` into `destination` (same element count), converting the dtype if they differ.
    func copy(_ source: Tensor, into destination: Tensor)
    func cast(_ tensor: Tensor, to dtype: DType) -> Tensor

    /// out = x with axes reordered: out.shape[i] = x.shape[axes[i]]. Rank at most 6.
    func permute(_ x: Tensor, _ axes: [Int]) -> Tensor
    /// A new tensor of `shape` assembled from byte blocks of `inputs` (the plans of `narrow` and `concat`, made once
    /// for every backend by `BlockCopies`).
    func copyBlocks(_ copies: [BlockCopy], from inputs: [Tensor], shape: [Int], dtype: DType) -> Tensor
    /// The convolution patches of x [B, C, H, W] as [B·Ho·Wo, C·kh·kw] (see `Im2ColPlan`), any dtype.
    func im2col(_ x: Tensor, _ plan: Im2ColPlan) -> Tensor
    /// `parts` equal pieces along `axis`, each a new contiguous tensor (default: a narrow per piece).
    func chunk(_ x: Tensor, parts: Int, axis: Int) -> [Tensor]

    /// Waits until all queued work on the device is done (no-op on the CPU).
    func synchronize()

    /// Queues the work `body` asks for so that it may run beside the work queued after it, until
    /// `awaitConcurrentWork()` (on CUDA: on a second stream; elsewhere simply in order). For work whose results
    /// nothing reads, and whose inputs nothing overwrites, before that call: a layer's parameter gradients.
    func concurrently(_ body: () -> Void)
    /// Orders all work queued from now on after the concurrent work queued so far (host reads and `synchronize`
    /// do this themselves).
    func awaitConcurrentWork()

    /// The seconds the device spent on each of `count` runs of `body`, one after the other
    /// with no wait between them: on CUDA the times between events recorded on the backend's stream before the
    /// first run and after each, waited for once at the end, so the host queues run i + 1 while the device still
    /// works on run i, as a training loop does; on the CPU, which runs ops as they are called, the wall clock.
    func measureSeconds(repeating count: Int, _ body: () -> Void) -> [Double]
}

extension MemoryOps {
    /// A backend that runs ops in order has nothing to overlap.
    public func concurrently(_ body: () -> Void) { body() }
    public func awaitConcurrentWork() {}

    /// One fill per range, of a view of it: the CPU's way, where a fill costs no launch.
    public func fill(_ tensor: Tensor, ranges: [Range<Int>], with value: Double) {
        for range in ranges {
            precondition(range.lowerBound >= 0 && range.upperBound <= tensor.count,
                         "fill: range \(range) outside a tensor of \(tensor.count) elements")
            fill(Tensor(shape: [range.count], dtype: tensor.dtype, buffer: tensor.buffer,
                        offset: tensor.offset + range.lowerBound), with: value)
        }
    }

    /// The seconds the device spent on the work `body` queues (one run of `measureSeconds(repeating:)`).
    public func measureSeconds(_ body: () -> Void) -> Double {
        measureSeconds(repeating: 1, body)[0]
    }
}

extension MemoryOps {
    /// Elements `start..<start+length` of `axis`, as a new contiguous tensor.
    public func narrow(_ x: Tensor, axis: Int, start: Int, length: Int) -> Tensor {
        let (shape, copies) = BlockCopies.narrow(x, axis: axis, start: start, length: length)
        return copyBlocks(copies, from: [x], shape: shape, dtype: x.dtype)
    }

    /// Joins tensors along `axis`; all other dimensions must agree.
    public func concat(_ xs: [Tensor], axis: Int) -> Tensor {
        let (shape, copies) = BlockCopies.concat(xs, axis: axis)
        return copyBlocks(copies, from: xs, shape: shape, dtype: xs[0].dtype)
    }

    public func clone(_ tensor: Tensor) -> Tensor {
        let out = empty(tensor.shape, dtype: tensor.dtype)
        copy(tensor, into: out)
        return out
    }

    public func scalar(_ tensor: Tensor) -> Double {
        precondition(tensor.count == 1, "scalar() of a tensor of shape \(tensor.shape)")
        return downloadDouble(tensor)[0]
    }

    /// Splits `x` into `parts` equal pieces along `axis` (as torch.chunk does for even sizes).
    public func chunk(_ x: Tensor, parts: Int, axis: Int) -> [Tensor] {
        precondition(x.shape[axis] % parts == 0, "chunk: dimension \(axis) of \(x.shape) not divisible by \(parts)")
        let length = x.shape[axis] / parts
        return (0..<parts).map { narrow(x, axis: axis, start: $0 * length, length: length) }
    }
}
