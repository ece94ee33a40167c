/// The fused building blocks of a transformer layer. Rows are the last axis; "[B, N, D]" means any tensor whose
/// first axis is the batch and last axis is D, with N = everything in between.
public protocol NNOps: AnyObject {
    /// LayerNorm over the last axis; weight/bias (shape [D]) are optional (elementwise_affine=False).
    /// Returns y and the per-row mean and 1/σ (f32, shape = x.shape without the last axis) for the backward.
    func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Double) -> (y: Tensor, mean: Tensor, rstd: Tensor)
    /// Returns dx; accumulates into dWeight/dBias when given.
    func layerNormBackward(_ dy: Tensor, x: Tensor, weight: Tensor?, mean: Tensor, rstd: Tensor,
                           dWeight: Tensor?, dBias: Tensor?) -> Tensor

    /// RMSNorm over the last axis (T5's LayerNorm, the qk-norm of newer DiTs): y = x · rstd · weight with
    /// rstd = 1/√(mean(x²) + eps), a LayerNorm that does not subtract the mean. Returns y and rstd (as `layerNorm`).
    func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Double) -> (y: Tensor, rstd: Tensor)
    /// Returns dx = rstd · (ĝ − x̂ · mean(ĝ ⊙ x̂)), ĝ = dy ⊙ weight; accumulates Σ dy ⊙ x̂ into dWeight when given.
    func rmsNormBackward(_ dy: Tensor, x: Tensor, weight: Tensor?, rstd: Tensor, dWeight: Tensor?) -> Tensor

    /// GroupNorm over x [B, C, …]: each (sample, group of C/G channels) normalised over its channels and positions
    /// (biased variance), then per-channel weight and bias (either may be nil). Forward only: it serves the frozen
    /// VAE.
    func groupNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, groups: Int, eps: Double) -> Tensor

    /// adaLN-zero's pre-norm in one pass: y = LayerNorm(x) · (1 + scale) + shift (LayerNorm without affine
    /// parameters; shift and scale [B, D] per sample). Returns y and the per-row statistics, as `layerNorm` does.
    func layerNormModulate(_ x: Tensor, shift: Tensor, scale: Tensor, eps: Double) -> (y: Tensor, mean: Tensor, rstd: Tensor)
    /// Its backward: dx (plus `residual` when given — the skip connection's gradient, added in the same pass),
    /// dShift and dScale. `eps` is the forward's (a backend may recompute x̂ from x).
    func layerNormModulateBackward(_ dy: Tensor, x: Tensor, scale: Tensor, mean: Tensor, rstd: Tensor, eps: Double,
                                   residual: Tensor?) -> (dx: Tensor, dShift: Tensor, dScale: Tensor)
    /// The gated residual and the pre-norm after it in one pass: sum = `gatedResidual(x, gate: gate, y)`, then
    /// `layerNormModulate(sum, …)`. Returns the sum (the residual stream, which the next residual and the backward
    /// read) and the pre-norm's outputs. Its backward is the two ops' backwards.
    func gatedResidualLayerNormModulate(_ x: Tensor, gate: Tensor, _ y: Tensor, shift: Tensor, scale: Tensor,
                                        eps: Double) -> (sum: Tensor, y: Tensor, mean: Tensor, rstd: Tensor)

    /// adaLN modulate: y = x · (1 + scale) + shift, with shift and scale [B, D] broadcast over the tokens of x [B, N, D].
    func modulate(_ x: Tensor, shift: Tensor, scale: Tensor) -> Tensor
    func modulateBackward(_ dy: Tensor, x: Tensor, scale: Tensor) -> (dx: Tensor, dShift: Tensor, dScale: Tensor)

    /// Gated residual: out = x + gate · y, gate [B, D] broadcast over the tokens of x, y [B, N, D].
    func gatedResidual(_ x: Tensor, gate: Tensor, _ y: Tensor) -> Tensor
    /// dx is dOut itself; returns the gradients of the gate and of y. With `biasGradient` (the gradient of the bias
    /// of the linear layer that produced y, [D], as `accumulateBiasGradient` takes it) it also adds Σ over batch and
    /// tokens of dY into it, which the same pass gets from its per-sample sums: that layer's backward need not read
    /// dY again for it.
    func gatedResidualBackward(_ dOut: Tensor, gate: Tensor, y: Tensor, biasGradient: Tensor?) -> (dGate: Tensor, dY: Tensor)

    /// GELU with the tanh approximation (as DiT's MLP uses) and SiLU.
    func gelu(_ x: Tensor) -> Tensor
    func geluBackward(_ dy: Tensor, x: Tensor) -> Tensor
    func silu(_ x: Tensor) -> Tensor
    func siluBackward(_ dy: Tensor, x: Tensor) -> Tensor

    /// Scaled dot-product attention, q [B, H, Nq, Dh], k and v [B, H, Nk, Dh]: softmax(q kᵀ · scale) v.
    /// Returns the output and the per-row log-sum-exp of the scaled scores (f32 [B, H, Nq]), which is all the
    /// backward needs to rebuild the probabilities (the flash-attention contract).
    ///
    /// `keyMask` (i32 [B, Nk], nil = every key) leaves out the keys where it is zero, for every head and query of
    /// that batch row (padded text tokens, padded video frames). A query whose keys are all masked has no softmax:
    /// it outputs zeros, its log-sum-exp is −∞, and it passes zero gradient to q, k and v.
    func attention(q: Tensor, k: Tensor, v: Tensor, keyMask: Tensor?, scale: Double) -> (out: Tensor, logSumExp: Tensor)
    func attentionBackward(_ dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, logSumExp: Tensor,
                           keyMask: Tensor?, scale: Double) -> (dq: Tensor, dk: Tensor, dv: Tensor)

    /// Attention with an additive score bias and a causal mask, forward only, for frozen text encoders (T5's relative
    /// position bias, CLIP's causal mask): softmax(q kᵀ · scale + bias[h]) v over the keys `keyMask` keeps and, when
    /// `causal`, the keys j ≤ i of query i. `bias` ([H, Nq, Nk] in q's dtype, shared by the batch rows) may be nil.
    /// A query with no attended key outputs zeros, as in `attention`.
    func biasedAttention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor?, keyMask: Tensor?, causal: Bool,
                         scale: Double) -> Tensor

    /// Self-attention on a packed qkv [B, N, 3·H·Dh], laid out [B, N, 3, H, Dh] as one Linear(D, 3D) makes it (timm's
    /// split): returns the heads merged back token-major, [B, N, H·Dh] (the projection's input), and the
    /// log-sum-exp [B, H, N]. A backend that reads strided operands skips the permutes around `attention`.
    func packedSelfAttention(_ qkv: Tensor, heads: Int, keyMask: Tensor?, scale: Double) -> (out: Tensor, logSumExp: Tensor)
    /// Its backward: the gradient of the packed qkv, [B, N, 3·H·Dh], from the gradient of the merged output.
    func packedSelfAttentionBackward(_ dOut: Tensor, qkv: Tensor, out: Tensor, logSumExp: Tensor, heads: Int,
                                     keyMask: Tensor?, scale: Double) -> Tensor

    /// Cross-attention on token-major operands: q [B, N, H·Dh] (one Linear's output) attends to the keys and values
    /// of kv [B, L, 2·H·Dh], laid out [B, L, 2, H, Dh] as one stacked Linear(C, 2D) makes them. `keyMask` i32 [B, L]
    /// drops padded context tokens (text). Returns the heads merged back, [B, N, H·Dh], and the log-sum-exp [B, H, N].
    func packedCrossAttention(_ q: Tensor, kv: Tensor, heads: Int, keyMask: Tensor?,
                              scale: Double) -> (out: Tensor, logSumExp: Tensor)
    /// Its backward: the gradients of q [B, N, D] and of the packed kv [B, L, 2D].
    func packedCrossAttentionBackward(_ dOut: Tensor, q: Tensor, kv: Tensor, out: Tensor, logSumExp: Tensor, heads: Int,
                                      keyMask: Tensor?, scale: Double) -> (dq: Tensor, dkv: Tensor)

    /// Rows of `table` [V, D] picked by `indices` (i32 [B]) → [B, D]; backward accumulates into dTable.
    func embedding(_ table: Tensor, indices: Tensor) -> Tensor
    func embeddingBackward(_ dOut: Tensor, indices: Tensor, into dTable: Tensor)

    /// Sinusoidal timestep features [B, dim] of timesteps t (f32 [B]), as DiT and diffusers compute them:
    /// [cos(t·f_i), sin(t·f_i)] with f_i = maxPeriod^(-i/(half - frequencyShift)), i < half = dim/2 (a zero column
    /// pads odd dims). The original DiT uses shift 0; diffusers' DiT (`downscale_freq_shift=1`) uses 1.
    func timestepEmbedding(_ t: Tensor, dim: Int, maxPeriod: Double, frequencyShift: Double) -> Tensor
}

extension NNOps {
    public func gatedResidualBackward(_ dOut: Tensor, gate: Tensor, y: Tensor) -> (dGate: Tensor, dY: Tensor) {
        gatedResidualBackward(dOut, gate: gate, y: y, biasGradient: nil)
    }

    /// The gated residual and the pre-norm composed of the two ops: the reference for a backend's fused kernel.
    public func gatedResidualLayerNormModulate(_ x: Tensor, gate: Tensor, _ y: Tensor, shift: Tensor, scale: Tensor,
                                               eps: Double) -> (sum: Tensor, y: Tensor, mean: Tensor, rstd: Tensor) {
        let sum = gatedResidual(x, gate: gate, y)
        let (normed, mean, rstd) = layerNormModulate(sum, shift: shift, scale: scale, eps: eps)
        return (sum, normed, mean, rstd)
    }
}

extension NNOps where Self: MemoryOps {
    public func packedSelfAttention(_ qkv: Tensor, heads: Int, keyMask: Tensor?, scale: Double) -> (out: Tensor, logSumExp: Tensor) {
        packedSelfAttentionByPermutes(qkv, heads: heads, keyMask: keyMask, scale: scale)
    }

    public func packedSelfAttentionBackward(_ dOut: Tensor, qkv: Tensor, out: Tensor, logSumExp: Tensor, heads: Int,
                                            keyMask: Tensor?, scale: Double) -> Tensor {
        packedSelfAttentionBackwardByPermutes(dOut, qkv: qkv, out: out, logSumExp: logSumExp, heads: heads,
                                              keyMask: keyMask, scale: scale)
    }

    public func packedCrossAttention(_ q: Tensor, kv: Tensor, heads: Int, keyMask: Tensor?,
                                     scale: Double) -> (out: Tensor, logSumExp: Tensor) {
        packedCrossAttentionByPermutes(q, kv: kv, heads: heads, keyMask: keyMask, scale: scale)
    }

    public func packedCrossAttentionBackward(_ dOut: Tensor, q: Tensor, kv: Tensor, out: Tensor, logSumExp: Tensor,
                                             heads: Int, keyMask: Tensor?, scale: Double) -> (dq: Tensor, dkv: Tensor) {
        packedCrossAttentionBackwardByPermutes(dOut, q: q, kv: kv, out: out, logSumExp: logSumExp, heads: heads,
                                               keyMask: keyMask, scale: scale)
    }

    /// The cross-attention through `attention` and permutes (what a backend without strided kernels runs).
    public func packedCrossAttentionByPermutes(_ q: Tensor, kv: Tensor, heads: Int, keyMask: Tensor?,
                                               scale: Double) -> (out: Tensor, logSumExp: Tensor) {
        let (qHeads, k, v) = crossHeads(q, kv: kv, heads: heads)
        let (out, logSumExp) = attention(q: qHeads, k: k, v: v, keyMask: keyMask, scale: scale)
        return (mergeHeads(out), logSumExp)
    }

    public func packedCrossAttentionBackwardByPermutes(_ dOut: Tensor, q: Tensor, kv: Tensor, out: Tensor,
                                                       logSumExp: Tensor, heads: Int, keyMask: Tensor?,
                                                       scale: Double) -> (dq: Tensor, dkv: Tensor) {
        let (qHeads, k, v) = crossHeads(q, kv: kv, heads: heads)
        let (dq, dk, dv) = attentionBackward(toHeads(dOut, heads: heads), q: qHeads, k: k, v: v,
                                             out: toHeads(out, heads: heads), logSumExp: logSumExp, keyMask: keyMask,
                                             scale: scale)
        // [2, B, H, L, Dh] → [B, L, 2, H, Dh] → [B, L, 2D]: the inverse of the split.
        let (batch, keys, headDim) = (kv.shape[0], kv.shape[1], q.shape[2] / heads)
        let headShape = [1, batch, heads, keys, headDim]
        let stacked = concat([dk.reshaped(headShape), dv.reshaped(headShape)], axis: 0)
        return (mergeHeads(dq), permute(stacked, [1, 3, 0, 2, 4]).reshaped(kv.shape))
    }

    /// [B, N, H·Dh] → [B, H, N, Dh].
    private func toHeads(_ x: Tensor, heads: Int) -> Tensor {
        permute(x.reshaped([x.shape[0], x.shape[1], heads, x.shape[2] / heads]), [0, 2, 1, 3])
    }

    /// [B, H, N, Dh] → [B, N, H·Dh].
    private func mergeHeads(_ x: Tensor) -> Tensor {
        permute(x, [0, 2, 1, 3]).reshaped([x.shape[0], x.shape[2], x.shape[1] * x.shape[3]])
    }

    /// q [B, N, D] and kv [B, L, 2D] as contiguous [B, H, N, Dh] and [B, H, L, Dh] tensors.
    private func crossHeads(_ q: Tensor, kv: Tensor, heads: Int) -> (q: Tensor, k: Tensor, v: Tensor) {
        precondition(q.rank == 3 && kv.rank == 3 && q.shape[0] == kv.shape[0] && kv.shape[2] == 2 * q.shape[2]
                     && q.shape[2] % heads == 0,
                     "packedCrossAttention: q must be [B, N, H·Dh] and kv [B, L, 2·H·Dh] with H = \(heads), "
                     + "got \(q.shape) and \(kv.shape)")
        let (batch, keys, headDim) = (kv.shape[0], kv.shape[1], q.shape[2] / heads)
        let split = permute(kv.reshaped([batch, keys, 2, heads, headDim]), [2, 0, 3, 1, 4])
        return (toHeads(q, heads: heads), split[0], split[1])
    }

    /// [B, N, 3D] → [B, N, 3, H, Dh] → [3, B, H, N, Dh]: q, k and v as contiguous [B, H, N, Dh] tensors.
    private func splitHeads(_ qkv: Tensor, heads: Int) -> (q: Tensor, k: Tensor, v: Tensor) {
        precondition(qkv.rank == 3 && qkv.shape[2] % (3 * heads) == 0,
                     "packedSelfAttention: qkv must be [B, N, 3·H·Dh] with H = \(heads), got \(qkv.shape)")
        let (batch, tokens, headDim) = (qkv.shape[0], qkv.shape[1], qkv.shape[2] / (3 * heads))
        let split = permute(qkv.reshaped([batch, tokens, 3, heads, headDim]), [2, 0, 3, 1, 4])
        return (split[0], split[1], split[2])
    }

    /// The packed self-attention through `attention` and permutes (what a backend without strided kernels runs).
    public func packedSelfAttentionByPermutes(_ qkv: Tensor, heads: Int, keyMask: Tensor?,
                                              scale: Double) -> (out: Tensor, logSumExp: Tensor) {
        let (q, k, v) = splitHeads(qkv, heads: heads)
        let (out, logSumExp) = attention(q: q, k: k, v: v, keyMask: keyMask, scale: scale)
        // [B, H, N, Dh] → [B, N, H, Dh] → [B, N, D].
        return (permute(out, [0, 2, 1, 3]).reshaped([qkv.shape[0], qkv.shape[1], qkv.shape[2] / 3]), logSumExp)
    }

    public func packedSelfAttentionBackwardByPermutes(_ dOut: Tensor, qkv: Tensor, out: Tensor, logSumExp: Tensor,
                                                      heads: Int, keyMask: Tensor?, scale: Double) -> Tensor {
        let (q, k, v) = splitHeads(qkv, heads: heads)
        let (batch, tokens, headDim) = (qkv.shape[0], qkv.shape[1], q.shape[3])
        let toHeads = { (t: Tensor) in self.permute(t.reshaped([batch, tokens, heads, headDim]), [0, 2, 1, 3]) }
        let (dq, dk, dv) = attentionBackward(toHeads(dOut), q: q, k: k, v: v, out: toHeads(out), logSumExp: logSumExp,
                                             keyMask: keyMask, scale: scale)
        // [3, B, H, N, Dh] → [B, N, 3, H, Dh] → [B, N, 3D]: the inverse of the forward's split.
        let headShape = [1, batch, heads, tokens, headDim]
        let stacked = concat([dq.reshaped(headShape), dk.reshaped(headShape), dv.reshaped(headShape)], axis: 0)
        return permute(stacked, [1, 3, 0, 2, 4]).reshaped(qkv.shape)
    }
}

extension NNOps where Self: ElementwiseOps {
    /// The fused pre-norm composed of its parts (a backend with a fused kernel overrides it).
    public func layerNormModulate(_ x: Tensor, shift: Tensor, scale: Tensor, eps: Double) -> (y: Tensor, mean: Tensor, rstd: Tensor) {
        let (normed, mean, rstd) = layerNorm(x, weight: nil, bias: nil, eps: eps)
        return (modulate(normed, shift: shift, scale: scale), mean, rstd)
    }

    public func layerNormModulateBackward(_ dy: Tensor, x: Tensor, scale: Tensor, mean: Tensor, rstd: Tensor, eps: Double,
                                          residual: Tensor?) -> (dx: Tensor, dShift: Tensor, dScale: Tensor) {
        // x̂ is recomputed from x with the forward's eps: the forward's x̂ exactly.
        let (normed, _, _) = layerNorm(x, weight: nil, bias: nil, eps: eps)
        let (dNormed, dShift, dScale) = modulateBackward(dy, x: normed, scale: scale)
        let dx = layerNormBackward(dNormed, x: x, weight: nil, mean: mean, rstd: rstd, dWeight: nil, dBias: nil)
        return (residual.map { add(dx, $0) } ?? dx, dShift, dScale)
    }
}

/// The shape of an attention call, validated once for every backend: q [B, H, Nq, Dh], k and v [B, H, Nk, Dh] of
/// one dtype, Nk > 0, and the key mask (when given) i32 [B, Nk].
public struct AttentionShape: Sendable {
    public let batch, heads, queries, keys, headDim: Int
    /// (batch, head) pairs: the independent attention problems.
    public var pairs: Int { batch * heads }

    public init(_ op: String, q: Tensor, k: Tensor, v: Tensor, keyMask: Tensor?) {
        precondition(k.shape == v.shape && k.dtype == v.dtype, "\(op): k \(k.shape) \(k.dtype) and v \(v.shape) \(v.dtype) differ")
        precondition(q.rank == 4 && k.rank == 4 && q.shape[0] == k.shape[0] && q.shape[1] == k.shape[1]
                     && q.shape[3] == k.shape[3] && q.dtype == k.dtype,
                     "\(op): q \(q.shape) \(q.dtype) and k/v \(k.shape) \(k.dtype) are not [B, H, Nq, Dh] / [B, H, Nk, Dh]")
        self.init(op, batch: q.shape[0], heads: q.shape[1], queries: q.shape[2], keys: k.shape[2], headDim: q.shape[3])
        if let keyMask {
            precondition(keyMask.dtype == .i32 && keyMask.shape == [batch, keys],
                         "\(op): keyMask must be i32 [B, Nk] = [\(batch), \(keys)], got \(keyMask.dtype) \(keyMask.shape)")
        }
    }

    /// The sizes alone, for operands laid out by explicit strides (a backend's strided entry points).
    public init(_ op: String, batch: Int, heads: Int, queries: Int, keys: Int, headDim: Int) {
        precondition(batch >= 0 && heads >= 0 && queries >= 0 && headDim > 0, "\(op): negative or empty size")
        precondition(keys > 0, "\(op): attention over zero keys")
        (self.batch, self.heads, self.queries, self.keys, self.headDim) = (batch, heads, queries, keys, headDim)
    }
}
