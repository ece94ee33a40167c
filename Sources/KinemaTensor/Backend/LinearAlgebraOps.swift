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

    /// A Linear layer's product with its epilogue: y = x Wᵀ + bias over the last axis of x (W [out, in], as PyTorch
    /// stores it), and with `gelu` y = GELU(x Wᵀ + bias), returning the pre-activation too (the backward's input).
    func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, gelu: Bool) -> (y: Tensor, preActivation: Tensor?)
    /// The input gradient of a Linear layer, dy W; with `geluInput`, the gradient through a GELU in front of the
    /// layer is applied too: (dy W) ⊙ GELU′(geluInput). With `biasGradient` (f32 [out]), the layer's bias gradient
    /// on the way: biasGradient += Σ dy over its leading positions (a backend may sum dy as it reads it for the
    /// product).
    func linearInputGradient(_ dy: Tensor, weight: Tensor, geluInput: Tensor?, biasGradient: Tensor?) -> Tensor
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

extension LinearAlgebraOps where Self: MemoryOps & NNOps {
    /// The epilogues composed of separate ops (a backend with fused epilogues overrides these).
    public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, gelu: Bool) -> (y: Tensor, preActivation: Tensor?) {
        let rows = x.reshaped([-1, weight.shape[1]])
        let product = matmul(rows, weight, transposeB: true)
        let z = bias.map { addBias(product, $0) } ?? product
        let shape = Array(x.shape.dropLast()) + [weight.shape[0]]
        return gelu ? (self.gelu(z).reshaped(shape), z.reshaped(shape)) : (z.reshaped(shape), nil)
    }

    public func linearInputGradient(_ dy: Tensor, weight: Tensor, geluInput: Tensor?, biasGradient: Tensor?) -> Tensor {
        if let biasGradient { accumulateBiasGradient(dy, into: biasGradient) }
        let dx = matmul(dy.reshaped([-1, weight.shape[0]]), weight)
            .reshaped(Array(dy.shape.dropLast()) + [weight.shape[1]])
        return geluInput.map { geluBackward(dx, x: $0) } ?? dx
    }
}
