/// Matrix products. The last two axes are the matrix; leading axes are a batch and must agree between `a`, `b`
/// and `c` — except that when `b` is rank 2 and `a` is not transposed, `a`'s leading axes fold into its rows
/// (how a Linear layer applies one weight to every token).
public protocol LinearAlgebraOps: AnyObject {
    /// c = alpha · op(a) · op(b) + beta · c, in place in `c`.
    func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool, into c: Tensor,
                alpha: Double, beta: Double)

    /// out[..., n] = x[..., n] + bias[n]
    func addBias(_ x: Tensor, _ bias: Tensor) -> Tensor
    /// accumulator[n] += Σ over all leading positions of dy[..., n] (the gradient of a bias).
    func accumulateBiasGradient(_ dy: Tensor, into accumulator: Tensor)
}

extension LinearAlgebraOps where Self: MemoryOps {
    /// op(a) · op(b) as a new tensor.
    public func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
        precondition(a.rank >= 2 && b.rank >= 2, "matmul needs rank ≥ 2, got \(a.shape) and \(b.shape)")
        let rows = transposeA ? a.shape[a.rank - 1] : a.shape[a.rank - 2]
        let cols = transposeB ? b.shape[b.rank - 2] : b.shape[b.rank - 1]
        let out = empty(Array(a.shape.dropLast(2)) + [rows, cols], dtype: a.dtype)
        matmul(a, b, transposeA: transposeA, transposeB: transposeB, into: out, alpha: 1, beta: 0)
        return out
    }
}
