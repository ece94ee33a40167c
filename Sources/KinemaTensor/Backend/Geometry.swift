/// Shape arithmetic every backend shares: validation with the op's message, and the index plan a kernel or a
/// copy loop then follows. Backends differ in how they move bytes, not in what they move.

/// `permute`: the output shape and, for each output axis, the input's element stride along it.
public struct PermutePlan: Sendable {
    public let outputShape: [Int]
    /// The copy as a loop over the output in order: `extents` (outermost first) and the source stride of each, in
    /// elements. Unit axes are dropped and output neighbours that are also source neighbours merged, so a
    /// [B, C, 1, 1, h, p, w, p] patchify runs as fewer, longer axes (at most `maxRank`).
    public let extents: [Int]
    public let strides: [Int]
    public static let maxRank = 8

    public init(shape: [Int], axes: [Int]) {
        precondition(axes.sorted() == Array(0..<shape.count), "permute: bad axes \(axes) for \(shape)")
        var sourceStrides = [Int](repeating: 1, count: shape.count)
        for axis in stride(from: shape.count - 2, through: 0, by: -1) {
            sourceStrides[axis] = sourceStrides[axis + 1] * shape[axis + 1]
        }
        outputShape = axes.map { shape[$0] }
        var extents: [Int] = [], strides: [Int] = []
        for axis in axes where shape[axis] != 1 {
            if let last = extents.indices.last, strides[last] == sourceStrides[axis] * shape[axis] {
                extents[last] *= shape[axis]
                strides[last] = sourceStrides[axis]
            } else {
                extents.append(shape[axis])
                strides.append(sourceStrides[axis])
            }
        }
        if extents.isEmpty { (extents, strides) = ([1], [1]) }
        precondition(extents.count <= Self.maxRank, "permute: \(axes) of \(shape) needs \(extents.count) axes, "
                     + "more than \(Self.maxRank)")
        (self.extents, self.strides) = (extents, strides)
    }
}

/// `narrow` and `concat` move whole contiguous blocks: one per (input, index before `axis`).
public struct BlockCopy: Sendable {
    public let input: Int
    /// Byte offsets from the start of the input and of the output.
    public let sourceOffset: Int
    public let destinationOffset: Int
    public let byteCount: Int
}

public enum BlockCopies {
    /// Elements `start..<start+length` of `axis`.
    public static func narrow(_ x: Tensor, axis: Int, start: Int, length: Int) -> (shape: [Int], copies: [BlockCopy]) {
        precondition(axis >= 0 && axis < x.rank && start >= 0 && start + length <= x.shape[axis],
                     "narrow: \(start)..<\(start + length) of axis \(axis) out of bounds for \(x.shape)")
        var shape = x.shape
        shape[axis] = length
        let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *) * x.dtype.byteSize
        let copies = length * inner == 0 ? [] : (0..<outer).map {
            BlockCopy(input: 0, sourceOffset: ($0 * x.shape[axis] + start) * inner,
                      destinationOffset: $0 * length * inner, byteCount: length * inner)
        }
        return (shape, copies)
    }

    /// `xs` joined along `axis`.
    public static func concat(_ xs: [Tensor], axis: Int) -> (shape: [Int], copies: [BlockCopy]) {
        precondition(!xs.isEmpty, "concat of no tensors")
        var shape = xs[0].shape
        for x in xs {
            var expected = shape
            expected[axis] = x.shape[axis]
            precondition(x.shape == expected && x.dtype == xs[0].dtype,
                         "concat: \(x.shape) \(x.dtype) does not fit \(shape) \(xs[0].dtype) along axis \(axis)")
        }
        shape[axis] = xs.map { $0.shape[axis] }.reduce(0, +)
        let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *) * xs[0].dtype.byteSize
        var copies: [BlockCopy] = []
        var position = 0
        for (index, x) in xs.enumerated() {
            let length = x.shape[axis]
            if length * inner > 0 {
                for o in 0..<outer {
                    copies.append(BlockCopy(input: index, sourceOffset: o * length * inner,
                                            destinationOffset: (o * shape[axis] + position) * inner,
                                            byteCount: length * inner))
                }
            }
            position += length
        }
        return (shape, copies)
    }
}

/// The sizes of `c = op(a) · op(b)` under the rules of `LinearAlgebraOps.matmul`, checked.
public struct MatmulShape: Sendable {
    public let m, n, k, batch: Int
    /// Elements between consecutive matrices of the batch (0 for a weight shared by the whole batch).
    public let strideA, strideB, strideC: Int
    /// Row length of a and b as stored (their leading dimensions).
    public let aColumns, bColumns: Int

    public init(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool, output c: Tensor) {
        precondition(a.rank >= 2 && b.rank >= 2, "matmul needs rank ≥ 2, got \(a.shape) and \(b.shape)")
        // Half-precision operands may accumulate into an f32 output (weight gradients under mixed precision).
        precondition(a.dtype == b.dtype && (a.dtype == c.dtype || (c.dtype == .f32 && (a.dtype == .bf16 || a.dtype == .f16))),
                     "matmul: dtypes differ (\(a.dtype), \(b.dtype), \(c.dtype))")
        let aRows = a.shape[a.rank - 2], bRows = b.shape[b.rank - 2]
        aColumns = a.shape[a.rank - 1]
        bColumns = b.shape[b.rank - 1]
        var m = transposeA ? aColumns : aRows
        k = transposeA ? aRows : aColumns
        n = transposeB ? bRows : bColumns
        precondition((transposeB ? bColumns : bRows) == k,
                     "matmul: inner dimensions differ: \(a.shape)\(transposeA ? "ᵀ" : "") × \(b.shape)\(transposeB ? "ᵀ" : "")")
        var batch = a.shape.dropLast(2).reduce(1, *)
        if b.rank == 2 && a.rank > 2 && !transposeA {
            m *= batch  // one weight applied to every row of every batch entry
            batch = 1
        } else {
            precondition(Array(a.shape.dropLast(2)) == Array(b.shape.dropLast(2)),
                         "matmul: batch dimensions differ: \(a.shape) vs \(b.shape)")
        }
        self.m = m
        self.batch = batch
        precondition(c.count == batch * m * n, "matmul: output \(c.shape) does not hold \(batch)×\(m)×\(n)")
        strideA = aRows * aColumns
        strideB = b.rank == 2 ? 0 : bRows * bColumns
        strideC = m * n
    }
}

/// The patches a 2D convolution reads, laid out for one matrix product: x [B, C, H, W] → columns
/// [B·Ho·Wo, C·kh·kw] (row (b, oy, ox), column (c, ky, kx); zero where the window leaves the padded input), so
/// conv2d(x, W [O, C, kh, kw]) = columns · W.reshaped([O, C·kh·kw])ᵀ.
public struct Im2ColPlan: Equatable, Sendable {
    public let batch, channels, height, width: Int
    public let kernelHeight, kernelWidth, stride: Int
    /// Zero padding on each side (diffusers' downsampler pads only bottom and right).
    public let padTop, padLeft, padBottom, padRight: Int

    public init(inputShape: [Int], kernel: (Int, Int), stride: Int = 1, padding: (top: Int, left: Int, bottom: Int, right: Int)) {
        precondition(inputShape.count == 4, "im2col: input must be [B, C, H, W], got \(inputShape)")
        precondition(kernel.0 > 0 && kernel.1 > 0 && stride > 0 && [padding.top, padding.left, padding.bottom,
                     padding.right].allSatisfy { $0 >= 0 }, "im2col: bad kernel \(kernel), stride \(stride) or padding")
        (batch, channels, height, width) = (inputShape[0], inputShape[1], inputShape[2], inputShape[3])
        (kernelHeight, kernelWidth, self.stride) = (kernel.0, kernel.1, stride)
        (padTop, padLeft, padBottom, padRight) = (padding.top, padding.left, padding.bottom, padding.right)
        precondition(outputHeight > 0 && outputWidth > 0, "im2col: the kernel is larger than the padded input \(inputShape)")
    }

    public var outputHeight: Int { (height + padTop + padBottom - kernelHeight) / stride + 1 }
    public var outputWidth: Int { (width + padLeft + padRight - kernelWidth) / stride + 1 }
    public var columnCount: Int { channels * kernelHeight * kernelWidth }
    public var outputShape: [Int] { [batch * outputHeight * outputWidth, columnCount] }
}
