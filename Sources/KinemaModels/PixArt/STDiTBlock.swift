import KinemaNN
import KinemaTensor

/// Open-Sora 1.0's STDiT block: spatial attention, temporal attention and cross-attention in one block, with
/// PixArt's adaLN-single modulation. Tokens are [B, T·S, D], frame-major (S patches per frame):
///   shift₁, scale₁, gate₁, shift₂, scale₂, gate₂ = scale_shift_table + t₆
///   x ← x + gate₁ · attn(modulate(norm1(x), shift₁, scale₁))       per frame: [B·T, S, D]
///   x ← x + gate₁ · attn_temp(x (+ temporal positions, block 0))   per patch: [B·S, T, D]; no norm, gate₁ again
///   x ← x + cross_attn(x, captions, caption mask)                  every token of a video to its caption
///   x ← x + gate₂ · mlp(modulate(norm2(x), shift₂, scale₂))
/// The last add is left pending in the stream for the next block's norm1 (or the final norm).
final class STDiTBlock: Layer {
    struct Cache {
        let modulation: [Tensor]
        let norm1: LayerNorm.Cache, spatial: MultiHeadAttention.Cache, spatialOut: Tensor
        let temporal: MultiHeadAttention.Cache, temporalOut: Tensor
        let cross: MultiHeadAttention.Cache
        let norm2: LayerNorm.Cache, mlp: MLP.Cache, mlpOut: Tensor
    }

    /// Open-Sora's packed projections (attn.qkv, cross_attn.kv_linear) are split by the checkpoint reader into
    /// these q, k and v names; the arena packs them back into one product.
    static let selfAttentionNames = AttentionNames(q: "q", k: "k", v: "v", out: "proj")
    static let crossAttentionNames = AttentionNames(q: "q_linear", k: "k_linear", v: "v_linear", out: "proj")

    let backend: any Backend
    let attn, attnTemp, crossAttn: MultiHeadAttention
    let mlp: MLP
    let scaleShiftTable: Parameter
    let eps: Double
    let dim: Int

    init(backend: any Backend, name: String, config: PixArtConfig, dtype: DType, seed: UInt64) {
        let d = config.hiddenSize
        self.backend = backend
        dim = d
        eps = config.normEps
        func selfAttention(_ suffix: String) -> MultiHeadAttention {
            MultiHeadAttention(backend: backend, name: "\(name).\(suffix)", dim: d, heads: config.numHeads,
                               bias: config.attentionBias, names: Self.selfAttentionNames, dtype: dtype, seed: seed)
        }
        attn = selfAttention("attn")
        attnTemp = selfAttention("attn_temp")
        crossAttn = MultiHeadAttention(backend: backend, name: "\(name).cross_attn", dim: d, heads: config.numHeads,
                                       contextDim: d, bias: config.attentionBias, names: Self.crossAttentionNames,
                                       dtype: dtype, seed: seed)
        mlp = MLP(backend: backend, name: "\(name).mlp", dim: d, hiddenDim: config.mlpHidden, dtype: dtype, seed: seed)
        scaleShiftTable = modulationTable(name: "\(name).scale_shift_table", rows: 6, dim: d, dtype: dtype, seed: seed,
                                          backend: backend)
        // Open-Sora starts the cross-attention's and the temporal attention's output projections at zero: an
        // untrained block is a PixArt image block, frame by frame.
        for parameter in crossAttn.toOut.parameters + attnTemp.toOut.parameters { backend.fill(parameter.value, with: 0) }
    }

    private var layers: [Layer] { [attn, crossAttn, mlp, attnTemp] }
    var parameters: [Parameter] { layers.flatMap(\.parameters) + [scaleShiftTable] }
    var packedRuns: [Range<Int>] { KinemaNN.packedRuns(of: layers) }

    /// The stream [B, T·S, D], t₆ [B, 6D], the projected captions [B, L, D] and their mask, and (block 0) the
    /// temporal positions to add before the temporal attention.
    func forward(_ stream: ResidualStream, t6: Tensor, captions: Tensor, captionMask: Tensor?, frames: Int,
                 patches: Int, temporalPositions: TemporalPositions?) -> (ResidualStream, Cache) {
        let batch = t6.shape[0]
        let modulation = backend.chunk(backend.addBias(t6, scaleShiftTable.value.reshaped([6 * dim])), parts: 6, axis: 1)
        let (x, normed1, mean1, rstd1) = stream.layerNormModulate(backend, shift: modulation[0], scale: modulation[1],
                                                                  eps: eps)
        let (spatialOut, spatialCache) = attn.forward(normed1.reshaped([batch * frames, patches, dim]))
        let x1 = backend.gatedResidual(x, gate: modulation[2], spatialOut.reshaped(x.shape))
        var sequences = regroup(x1, batch: batch, frames, patches, backend: backend)
        if let temporalPositions { sequences = temporalPositions.add(to: sequences) }
        let (temporalOut, temporalCache) = attnTemp.forward(sequences)
        let temporalTokens = regroup(temporalOut, batch: batch, patches, frames, backend: backend).reshaped(x.shape)
        let x2 = backend.gatedResidual(x1, gate: modulation[2], temporalTokens)
        let (crossOut, crossCache) = crossAttn.forward(x2, context: captions, keyMask: captionMask)
        let x3 = backend.add(x2, crossOut)
        let (normed2, mean2, rstd2) = backend.layerNormModulate(x3, shift: modulation[3], scale: modulation[4], eps: eps)
        let (mlpOut, mlpCache) = mlp.forward(normed2)
        let cache = Cache(modulation: modulation, norm1: LayerNorm.Cache(x: x, mean: mean1, rstd: rstd1),
                          spatial: spatialCache, spatialOut: spatialOut.reshaped(x.shape), temporal: temporalCache,
                          temporalOut: temporalTokens, cross: crossCache,
                          norm2: LayerNorm.Cache(x: x3, mean: mean2, rstd: rstd2), mlp: mlpCache, mlpOut: mlpOut)
        return (ResidualStream(x3, gate: modulation[5], branch: mlpOut), cache)
    }

    /// From the gradient of the block's output stream: accumulates the parameter gradients and returns the
    /// gradients of the input stream, of t₆ and of the projected captions.
    func backward(_ dOut: Tensor, _ cache: Cache, frames: Int, patches: Int) -> (dx: Tensor, dt6: Tensor, dCaptions: Tensor) {
        let m = cache.modulation, batch = m[0].shape[0], shape = dOut.shape
        // Each gated residual's backward also adds the bias gradient of the layer before it (a sum over every
        // token, which the temporal branch's regrouping leaves unchanged).
        let (dGate2, dMLPOut) = backend.gatedResidualBackward(dOut, gate: m[5], y: cache.mlpOut,
                                                              biasGradient: mlp.fc2.bias?.gradient)
        let dNormed2 = mlp.backward(dMLPOut, cache.mlp, outputBiasGradientAccumulated: true)
        let (dx3, dShift2, dScale2) = backend.layerNormModulateBackward(
            dNormed2, x: cache.norm2.x, scale: m[4], mean: cache.norm2.mean, rstd: cache.norm2.rstd, eps: eps,
            residual: dOut)
        let (dCross, dCaptions) = crossAttn.backward(dx3, cache.cross)
        let dx2 = backend.add(dx3, dCross)
        let (dGateTemporal, dTemporalTokens) = backend.gatedResidualBackward(dx2, gate: m[2], y: cache.temporalOut,
                                                                             biasGradient: attnTemp.toOut.bias?.gradient)
        let dSequences = attnTemp.backward(regroup(dTemporalTokens, batch: batch, frames, patches, backend: backend),
                                           cache.temporal, outputBiasGradientAccumulated: true).dx
        let dx1 = backend.add(dx2, regroup(dSequences, batch: batch, patches, frames, backend: backend).reshaped(shape))
        let (dGateSpatial, dSpatialOut) = backend.gatedResidualBackward(dx1, gate: m[2], y: cache.spatialOut,
                                                                        biasGradient: attn.toOut.bias?.gradient)
        let dNormed1 = attn.backward(dSpatialOut.reshaped([batch * frames, patches, dim]), cache.spatial,
                                     outputBiasGradientAccumulated: true).dx
        let (dx, dShift1, dScale1) = backend.layerNormModulateBackward(
            dNormed1.reshaped(shape), x: cache.norm1.x, scale: m[1], mean: cache.norm1.mean, rstd: cache.norm1.rstd,
            eps: eps, residual: dx1)
        let dt6 = backend.concat([dShift1, dScale1, backend.add(dGateSpatial, dGateTemporal), dShift2, dScale2, dGate2],
                                 axis: 1)
        backend.accumulateBiasGradient(dt6, into: scaleShiftTable.gradient.reshaped([6 * dim]))
        return (dx, dt6, dCaptions!)
    }
}
