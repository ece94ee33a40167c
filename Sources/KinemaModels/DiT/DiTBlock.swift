import KinemaNN
import KinemaTensor

/// The residual stream between DiT layers, its last gated add possibly still to do: value = base + gate ⊙ branch
/// (or base alone). A block leaves its second add to the layer that normalises its output next, so that the add
/// and that layer's pre-norm run as one pass over the stream (`gatedResidualLayerNormModulate`).
struct ResidualStream {
    let base: Tensor
    let pending: (gate: Tensor, branch: Tensor)?

    init(_ value: Tensor) { (base, pending) = (value, nil) }
    init(_ base: Tensor, gate: Tensor, branch: Tensor) { (self.base, pending) = (base, (gate, branch)) }

    /// The stream's value, the pending add done (for a layer that reads it other than through a pre-norm).
    func value(_ backend: any Backend) -> Tensor {
        pending.map { backend.gatedResidual(base, gate: $0.gate, $0.branch) } ?? base
    }

    /// adaLN's pre-norm of the stream: returns the stream's value x (the pending add done) and modulate(norm(x)).
    func layerNormModulate(_ backend: any Backend, shift: Tensor, scale: Tensor,
                           eps: Double) -> (x: Tensor, y: Tensor, mean: Tensor, rstd: Tensor) {
        guard let pending else {
            let (y, mean, rstd) = backend.layerNormModulate(base, shift: shift, scale: scale, eps: eps)
            return (base, y, mean, rstd)
        }
        let (sum, y, mean, rstd) = backend.gatedResidualLayerNormModulate(base, gate: pending.gate, pending.branch,
                                                                          shift: shift, scale: scale, eps: eps)
        return (sum, y, mean, rstd)
    }
}

/// One DiT block with adaLN-zero conditioning:
///   shift₁, scale₁, gate₁, shift₂, scale₂, gate₂ = adaLN_modulation(SiLU(c))
///   x ← x + gate₁ · attn(modulate(norm1(x), shift₁, scale₁))
///   x ← x + cross_attn(x, captions, caption mask)        (a video DiT conditioned by cross-attention only)
///   x ← x + gate₂ · mlp(modulate(norm2(x), shift₂, scale₂))
/// Each residual add runs fused with the pre-norm after it: the first with norm2 (without a cross-attention), the
/// second with the next layer's pre-norm (the block returns it pending in its output stream).
final class DiTBlock: Layer {
    struct Cache {
        let scale1, gate1, scale2, gate2: Tensor
        let norm1: LayerNorm.Cache, attention: SelfAttention.Cache, attentionOut: Tensor
        let crossAttention: MultiHeadAttention.Cache?
        let norm2: LayerNorm.Cache, mlp: MLP.Cache, mlpOut: Tensor
    }

    let backend: any Backend
    let norm1: LayerNorm
    let attention: SelfAttention
    let norm2: LayerNorm
    let mlp: MLP
    let adaLN: Linear
    let crossAttention: MultiHeadAttention?

    /// `crossAttention`: a cross-attention to projected captions of the hidden width (PixArt's attn2 names under
    /// `cross_attn`), its output projection starting at zero.
    init(backend: any Backend, name: String, config: DiTConfig, crossAttention: Bool = false, dtype: DType, seed: UInt64) {
        let d = config.hiddenSize
        self.backend = backend
        norm1 = LayerNorm(backend: backend, name: "\(name).norm1", dim: d, affine: false, eps: 1e-6, dtype: dtype)
        attention = SelfAttention(backend: backend, name: "\(name).attn", dim: d, heads: config.numHeads, dtype: dtype,
                                  seed: seed)
        norm2 = LayerNorm(backend: backend, name: "\(name).norm2", dim: d, affine: false, eps: config.mlpNormEps, dtype: dtype)
        mlp = MLP(backend: backend, name: "\(name).mlp", dim: d, hiddenDim: config.mlpHiddenSize, dtype: dtype, seed: seed)
        adaLN = Linear(backend: backend, name: "\(name).adaLN_modulation.1", inFeatures: d, outFeatures: 6 * d, dtype: dtype,
                       zeroInitialized: true)  // adaLN-zero: every block starts as the identity
        self.crossAttention = crossAttention
            ? MultiHeadAttention(backend: backend, name: "\(name).cross_attn", dim: d, heads: config.numHeads,
                                 contextDim: d, bias: true, dtype: dtype, seed: seed) : nil
        for parameter in self.crossAttention?.toOut.parameters ?? [] { backend.fill(parameter.value, with: 0) }
    }

    /// The self-attention, the cross-attention (if any) and the MLP; `adaLN`'s parameters sit in the DiT's stack of
    /// modulation layers, which runs every block's adaLN as one product (`LinearStack`).
    private var layers: [Layer] { [attention] + (crossAttention.map { [$0] } ?? []) + [mlp] }
    var parameters: [Parameter] { layers.flatMap(\.parameters) }
    /// The cross-attention's k and v.
    var packedRuns: [Range<Int>] { KinemaNN.packedRuns(of: layers) }

    /// x [B, N, D] (as a stream) and the six [B, D] modulations adaLN(SiLU(c)) computes for this block. Each
    /// pre-norm is LayerNorm fused with its modulation and with the residual add before it.
    /// `keyMask` (i32 [B, N]) leaves padded tokens out of the self-attention's keys; `captions` [B, L, D] and their
    /// mask feed the cross-attention of a block that has one.
    func forward(_ stream: ResidualStream, modulation: ArraySlice<Tensor>, keyMask: Tensor? = nil,
                 captions: Tensor? = nil, captionMask: Tensor? = nil) -> (ResidualStream, Cache) {
        let modulation = Array(modulation)
        let (x, modulated1, mean1, rstd1) = stream.layerNormModulate(backend, shift: modulation[0],
                                                                     scale: modulation[1], eps: norm1.eps)
        let (attentionOut, attentionCache) = attention.forward(modulated1, keyMask: keyMask)
        var afterAttention = ResidualStream(x, gate: modulation[2], branch: attentionOut)
        var crossCache: MultiHeadAttention.Cache?
        if let crossAttention {
            precondition(captions != nil, "\(crossAttention.toQ.weight.name): this block cross-attends and needs captions")
            let x1 = afterAttention.value(backend)
            let (crossOut, cache) = crossAttention.forward(x1, context: captions, keyMask: captionMask)
            (afterAttention, crossCache) = (ResidualStream(backend.add(x1, crossOut)), cache)
        }
        let (x1, modulated2, mean2, rstd2) = afterAttention.layerNormModulate(backend, shift: modulation[3],
                                                                              scale: modulation[4], eps: norm2.eps)
        let (mlpOut, mlpCache) = mlp.forward(modulated2)
        let cache = Cache(scale1: modulation[1], gate1: modulation[2],
                          scale2: modulation[4], gate2: modulation[5],
                          norm1: LayerNorm.Cache(x: x, mean: mean1, rstd: rstd1), attention: attentionCache,
                          attentionOut: attentionOut, crossAttention: crossCache,
                          norm2: LayerNorm.Cache(x: x1, mean: mean2, rstd: rstd2), mlp: mlpCache, mlpOut: mlpOut)
        return (ResidualStream(x1, gate: modulation[5], branch: mlpOut), cache)
    }

    /// Returns the gradients of x and of the six modulations, in their order, and of the captions (nil without a
    /// cross-attention).
    func backward(_ dOut: Tensor, _ cache: Cache) -> (dx: Tensor, dModulation: [Tensor], dCaptions: Tensor?) {
        // Second residual: x2 = x1 + gate₂ · mlp(modulate(norm2(x1))); the skip's gradient dOut joins in the
        // pre-norm's backward. Each gated residual's backward also adds the bias gradient of the layer before it.
        let (dGate2, dMLPOut) = backend.gatedResidualBackward(dOut, gate: cache.gate2, y: cache.mlpOut,
                                                              biasGradient: mlp.fc2.bias?.gradient)
        let dModulated2 = mlp.backward(dMLPOut, cache.mlp, outputBiasGradientAccumulated: true)
        var (dx1, dShift2, dScale2) = backend.layerNormModulateBackward(
            dModulated2, x: cache.norm2.x, scale: cache.scale2, mean: cache.norm2.mean, rstd: cache.norm2.rstd,
            eps: norm2.eps, residual: dOut)
        var dCaptions: Tensor?
        if let crossAttention, let crossCache = cache.crossAttention {
            let (dCross, dContext) = crossAttention.backward(dx1, crossCache)
            (dx1, dCaptions) = (backend.add(dx1, dCross), dContext)
        }
        // First residual: x1 = x + gate₁ · attn(modulate(norm1(x))).
        let (dGate1, dAttentionOut) = backend.gatedResidualBackward(dx1, gate: cache.gate1, y: cache.attentionOut,
                                                                    biasGradient: attention.proj.bias?.gradient)
        let dModulated1 = attention.backward(dAttentionOut, cache.attention, outputBiasGradientAccumulated: true)
        let (dx, dShift1, dScale1) = backend.layerNormModulateBackward(
            dModulated1, x: cache.norm1.x, scale: cache.scale1, mean: cache.norm1.mean, rstd: cache.norm1.rstd,
            eps: norm1.eps, residual: dx1)
        return (dx, [dShift1, dScale1, dGate1, dShift2, dScale2, dGate2], dCaptions)
    }
}

/// DiT's final layer: adaLN (shift, scale) on a non-affine LayerNorm, then a linear map to p·p·C_out per token.
final class DiTFinalLayer: Layer {
    struct Cache {
        let scale: Tensor
        let norm: LayerNorm.Cache, modulated: Tensor
    }

    let backend: any Backend
    let norm: LayerNorm
    let linear: Linear
    let adaLN: Linear

    /// Starts at zero (DiT zeroes the final layer), so an untrained model predicts zero. `outFeatures`: per token,
    /// p·p·C_out by default (a video DiT's pt·p·p·C_out).
    init(backend: any Backend, config: DiTConfig, outFeatures: Int? = nil, dtype: DType) {
        let d = config.hiddenSize, p = config.patchSize
        self.backend = backend
        norm = LayerNorm(backend: backend, name: "final_layer.norm_final", dim: d, affine: false, eps: 1e-6, dtype: dtype)
        linear = Linear(backend: backend, name: "final_layer.linear", inFeatures: d,
                        outFeatures: outFeatures ?? p * p * config.outChannels, dtype: dtype, zeroInitialized: true)
        adaLN = Linear(backend: backend, name: "final_layer.adaLN_modulation.1", inFeatures: d, outFeatures: 2 * d,
                       dtype: dtype, zeroInitialized: true)
    }

    /// The linear map's (`adaLN` is in the DiT's modulation stack, as the blocks' are).
    var parameters: [Parameter] { linear.parameters }

    /// The stream and the two [B, D] modulations (shift, scale) adaLN(SiLU(c)) computes for this layer.
    func forward(_ stream: ResidualStream, modulation: ArraySlice<Tensor>) -> (Tensor, Cache) {
        let modulation = Array(modulation)
        let (x, modulated, mean, rstd) = stream.layerNormModulate(backend, shift: modulation[0], scale: modulation[1],
                                                                  eps: norm.eps)
        let cache = Cache(scale: modulation[1],
                          norm: LayerNorm.Cache(x: x, mean: mean, rstd: rstd), modulated: modulated)
        return (linear.forward(modulated), cache)
    }

    /// Returns the gradients of the stream and of the two modulations.
    func backward(_ dOut: Tensor, _ cache: Cache) -> (dx: Tensor, dModulation: [Tensor]) {
        let dModulated = linear.backward(dOut, input: cache.modulated)
        let (dx, dShift, dScale) = backend.layerNormModulateBackward(
            dModulated, x: cache.norm.x, scale: cache.scale, mean: cache.norm.mean, rstd: cache.norm.rstd, eps: norm.eps,
            residual: nil)
        return (dx, [dShift, dScale])
    }
}

/// The arena of an adaLN-zero model (DiT, the video DiT): the embedders' parameters, the blocks' (their packed runs
/// kept), every adaLN's weights and then their biases back to back, then the final layer's own; and the adaLNs as
/// one product (`LinearStack`), since they all read SiLU(c).
func adaLNZeroArena(embedders: [Parameter], blocks: [DiTBlock], finalLayer: DiTFinalLayer, dtype: DType,
                    backend: any Backend, keepsMaster: Bool) -> (arena: ParameterArena, modulation: LinearStack) {
    let adaLN = blocks.map(\.adaLN) + [finalLayer.adaLN]
    let runs = packedRuns(of: blocks).map { ($0.lowerBound + embedders.count)..<($0.upperBound + embedders.count) }
    let leading = embedders + blocks.flatMap(\.parameters)
    let weights = leading.count..<leading.count + adaLN.count
    let arena = ParameterArena(parameters: leading + adaLN.map(\.weight) + adaLN.compactMap(\.bias) + finalLayer.parameters,
                               computeDType: dtype, backend: backend, keepsMaster: keepsMaster,
                               packedRuns: runs + [weights, weights.upperBound..<weights.upperBound + adaLN.count])
    return (arena, LinearStack(adaLN, backend: backend))
}
