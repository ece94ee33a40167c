import CBLAS
import Dispatch
import Foundation
import KinemaTensor
import RealModule

/// The reference backend: plain loops over host memory, split across threads for large tensors, matrix products
/// through OpenBLAS. Computes in f32, or f64 for tensors stored in f64 (the gradient checks use that).
public final class CPUBackend: Backend {
    public let device = Device.cpu
    public let threads: Int
    let memoryPool = HostMemoryPool(limit: 2 << 30)

    public init(threads: Int = ProcessInfo.processInfo.activeProcessorCount) {
        precondition(threads >= 1)
        self.threads = threads
        openblas_set_num_threads(1)  // see matmul: we split gemm work across our own threads
    }

    public var name: String { "cpu (\(threads) thread\(threads == 1 ? "" : "s"), OpenBLAS)" }

    public func synchronize() {}

    /// Runs `body` over `0..<count` in at most `threads` contiguous chunks of at least `grain` elements.
    /// Results never depend on the split: every element is written by exactly one chunk, and reductions
    /// use `blockedSum`, whose blocks are fixed.
    func parallelFor(_ count: Int, grain: Int = 16_384, _ body: (Range<Int>) -> Void) {
        let chunks = Swift.min(threads, Swift.max(1, count / grain))
        if chunks <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            let start = count * chunk / chunks, end = count * (chunk + 1) / chunks
            body(start..<end)
        }
    }

    /// Σ of `term(i)` over 0..<count in f64: fixed blocks summed in parallel, then the block sums in order,
    /// so the value is the same for every thread count.
    func blockedSum(_ count: Int, _ term: (Int) -> Double) -> Double {
        let blockSize = 8192
        let blocks = (count + blockSize - 1) / blockSize
        var partial = [Double](repeating: 0, count: blocks)
        partial.withUnsafeMutableBufferPointer { sums in
            let out = sums.baseAddress!
            parallelFor(blocks, grain: 4) { range in
                for block in range {
                    var total = 0.0
                    for i in (block * blockSize)..<Swift.min(count, (block + 1) * blockSize) { total += term(i) }
                    out[block] = total
                }
            }
        }
        return partial.reduce(0, +)
    }
}

/// The element types the CPU computes in.
public protocol CPUScalar: BinaryFloatingPoint, Real {
    static var dtype: DType { get }
}
extension Float: CPUScalar { public static var dtype: DType { .f32 } }
extension Double: CPUScalar { public static var dtype: DType { .f64 } }

extension Tensor {
    /// Typed host pointer to the elements (CPU tensors only).
    @inline(__always)
    func elements<T>(_: T.Type) -> UnsafeMutablePointer<T> {
        address.assumingMemoryBound(to: T.self)
    }
}

/// Runs the f32 or the f64 instantiation of a kernel (each called with a concrete type, so each is specialised),
/// or stops with a message naming the op.
@inline(__always)
func floatSwitch<R>(_ dtype: DType, _ op: String, f32: () -> R, f64: () -> R) -> R {
    switch dtype {
    case .f32: return f32()
    case .f64: return f64()
    default: preconditionFailure("\(op): the CPU backend computes in f32 or f64, not \(dtype); cast first")
    }
}

@inline(__always)
func requireSameShape(_ op: String, _ tensors: Tensor...) {
    let first = tensors[0]
    for t in tensors.dropFirst() {
        precondition(t.shape == first.shape && t.dtype == first.dtype,
                     "\(op): shapes/dtypes differ: \(first.shape) \(first.dtype) vs \(t.shape) \(t.dtype)")
    }
}
