import KinemaNN
import KinemaTensor

/// diffusers' BasicTransformerBlock with norm_type "ada_norm_single" (PixArt's blocks, Latte's spatial and temporal
/// blocks):
///   shift₁, scale₁, gate₁, shift₂, scale₂, gate₂ = scale_shift_table + t₆      (t₆ = adaLN-single's [B, 6D], shared)
///   x ← x + gate₁ · attn1(modulate(norm1(x), shift₁, scale₁))
///   x ← x + attn2(x, captions, caption mask)          (blocks with cross-attention only; no norm, no gate)
///   x ← x + gate₂ · ff(modulate(norm2(x), shift₂, scale₂))
/// The last add is left pending in the stream, so the next block's norm1 (or the final norm) does it in its pass.
final class AdaLNSingleBlock: Layer {
    struct Cache {
        let modulation: [Tensor]
        let norm1: LayerNorm.Cache, attention: MultiHeadAttention.Cache, attentionOut: Tensor
        let crossAttention: MultiHeadAttention.Cache?
        let norm2: LayerNorm.Cache, feedForward: MLP.Cache, feedForwardOut: Tensor
    }

    let backend: any Backend
    let attn1: MultiHeadAttention
    let attn2: MultiHeadAttention?
    let ff: MLP
    /// [6, D]: the block's own offsets to the shared modulation (initialised N(0, 1/D), as diffusers does).
    let scaleShiftTable: Parameter
    let eps: Double
    let dim: Int

    init(backend: any Backend, name: String, config: PixArtConfig, crossAttention: Bool, dtype: DType, seed: UInt64) {
        let d = config.hiddenSize
        self.backend = backend
        dim = d
        eps = config.normEps
        attn1 = MultiHeadAttention(backend: backend, name: "\(name).attn1", dim: d, heads: config.numHeads,
                                   bias: config.attentionBias, dtype: dtype, seed: seed)
        attn2 = crossAttention ? MultiHeadAttention(backend: backend, name: "\(name).attn2", dim: d,
                                                    heads: config.numHeads, contextDim: d, bias: config.attentionBias,
                                                    dtype: dtype, seed: seed) : nil
        ff = MLP(backend: backend, name: "\(name).ff", dim: d, hiddenDim: config.mlpHidden,
                 layerNames: ("net.0.proj", "net.2"), dtype: dtype, seed: seed)
        scaleShiftTable = modulationTable(name: "\(name).scale_shift_table", rows: 6, dim: d, dtype: dtype, seed: seed,
                                          backend: backend)
        // PixArt starts the cross-attention's output projection at zero: an untrained block ignores the captions.
        for parameter in attn2?.toOut.parameters ?? [] { backend.fill(parameter.value, with: 0) }
    }

    private var layers: [Layer] { [attn1] + (attn2.map { [$0] } ?? []) + [ff] }
    var parameters: [Parameter] { layers.flatMap(\.parameters) + [scaleShiftTable] }
    var packedRuns: [Range<Int>] { KinemaNN.packedRuns(of: layers) }

    /// The stream, t₆ [B, 6D], and for a block with cross-attention the projected captions [B, L, D] and their key
    /// mask (i32 [B, L] or nil).
    /// `captionRepeats`: stream samples per caption (a video's frames).
    func forward(_ stream: ResidualStream, t6: Tensor, captions: Tensor? = nil, captionMask: Tensor? = nil,
                 captionRepeats: Int = 1) -> (ResidualStream, Cache) {
        let modulation = backend.chunk(backend.addBias(t6, scaleShiftTable.value.reshaped([6 * dim])), parts: 6, axis: 1)
        let (x, normed1, mean1, rstd1) = stream.layerNormModulate(backend, shift: modulation[0], scale: modulation[1],
                                                                  eps: eps)
        let (attentionOut, attentionCache) = attn1.forward(normed1)
        let x1 = backend.gatedResidual(x, gate: modulation[2], attentionOut)
        var x2 = x1, crossCache: MultiHeadAttention.Cache?
        if let attn2 {
            precondition(captions != nil, "\(attn2.toQ.weight.name): this block cross-attends and needs captions")
            let (crossOut, cache) = attn2.forward(x1, context: captions, keyMask: captionMask,
                                                  contextRepeats: captionRepeats)
            (x2, crossCache) = (backend.add(x1, crossOut), cache)
        }
        let (normed2, mean2, rstd2) = backend.layerNormModulate(x2, shift: modulation[3], scale: modulation[4], eps: eps)
        let (feedForwardOut, feedForwardCache) = ff.forward(normed2)
        let cache = Cache(modulation: modulation, norm1: LayerNorm.Cache(x: x, mean: mean1, rstd: rstd1),
                          attention: attentionCache, attentionOut: attentionOut, crossAttention: crossCache,
                          norm2: LayerNorm.Cache(x: x2, mean: mean2, rstd: rstd2), feedForward: feedForwardCache,
                          feedForwardOut: feedForwardOut)
        return (ResidualStream(x2, gate: modulation[5], branch: feedForwardOut), cache)
    }

    /// From the gradient of the block's output stream: accumulates the parameter gradients (the table's included)
    /// and returns the gradients of the input stream, of t₆ ([B, 6D]) and of the captions (nil without
    /// cross-attention).
    func backward(_ dOut: Tensor, _ cache: Cache) -> (dx: Tensor, dt6: Tensor, dCaptions: Tensor?) {
        let m = cache.modulation
        // Each gated residual's backward also adds the bias gradient of the layer before it.
        let (dGate2, dFeedForwardOut) = backend.gatedResidualBackward(dOut, gate: m[5], y: cache.feedForwardOut,
                                                                      biasGradient: ff.fc2.bias?.gradient)
        let dNormed2 = ff.backward(dFeedForwardOut, cache.feedForward, outputBiasGradientAccumulated: true)
        let (dx2, dShift2, dScale2) = backend.layerNormModulateBackward(
            dNormed2, x: cache.norm2.x, scale: m[4], mean: cache.norm2.mean, rstd: cache.norm2.rstd, eps: eps,
            residual: dOut)
        var dx1 = dx2, dCaptions: Tensor?
        if let attn2, let crossCache = cache.crossAttention {
            let (dCross, dContext) = attn2.backward(dx2, crossCache)
            (dx1, dCaptions) = (backend.add(dx2, dCross), dContext)
        }
        let (dGate1, dAttentionOut) = backend.gatedResidualBackward(dx1, gate: m[2], y: cache.attentionOut,
                                                                    biasGradient: attn1.toOut.bias?.gradient)
        let dNormed1 = attn1.backward(dAttentionOut, cache.attention, outputBiasGradientAccumulated: true).dx
        let (dx, dShift1, dScale1) = backend.layerNormModulateBackward(
            dNormed1, x: cache.norm1.x, scale: m[1], mean: cache.norm1.mean, rstd: cache.norm1.rstd, eps: eps,
            residual: dx1)
        let dt6 = backend.concat([dShift1, dScale1, dGate1, dShift2, dScale2, dGate2], axis: 1)
        backend.accumulateBiasGradient(dt6, into: scaleShiftTable.gradient.reshaped([6 * dim]))
        return (dx, dt6, dCaptions)
    }
}
