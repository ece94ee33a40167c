import KinemaNN
import KinemaTensor

/// One DiT block with adaLN-zero conditioning:
///   shift₁, scale₁, gate₁, shift₂, scale₂, gate₂ = adaLN_modulation(SiLU(c))
///   x ← x + gate₁ · attn(modulate(norm1(x), shift₁, scale₁))
///   x ← x + gate₂ · mlp(modulate(norm2(x), shift₂, scale₂))
final class DiTBlock: Layer {
    struct Cache {
        let conditioning: Tensor  // SiLU(c), the adaLN input
        let shift1, scale1, gate1, shift2, scale2, gate2: Tensor
        let norm1: LayerNorm.Cache, normed1: Tensor, attention: SelfAttention.Cache, attentionOut: Tensor
        let norm2: LayerNorm.Cache, normed2: Tensor, mlp: MLP.Cache, mlpOut: Tensor
    }

    let backend: any Backend
    let norm1: LayerNorm
    let attention: SelfAttention
    let norm2: LayerNorm
    let mlp: MLP
    let adaLN: Linear

    init(backend: any Backend, name: String, config: DiTConfig, dtype: DType, seed: UInt64) {
        let d = config.hiddenSize
        self.backend = backend
        norm1 = LayerNorm(backend: backend, name: "\(name).norm1", dim: d, affine: false, eps: 1e-6, dtype: dtype)
        attention = SelfAttention(backend: backend, name: "\(name).attn", dim: d, heads: config.numHeads, dtype: dtype,
                                  seed: seed)
        norm2 = LayerNorm(backend: backend, name: "\(name).norm2", dim: d, affine: false, eps: config.mlpNormEps, dtype: dtype)
        mlp = MLP(backend: backend, name: "\(name).mlp", dim: d, hiddenDim: config.mlpHiddenSize, dtype: dtype, seed: seed)
        adaLN = Linear(backend: backend, name: "\(name).adaLN_modulation.1", inFeatures: d, outFeatures: 6 * d, dtype: dtype,
                       zeroInitialized: true)  // adaLN-zero: every block starts as the identity
    }

    var parameters: [Parameter] { attention.parameters + mlp.parameters + adaLN.parameters }

    /// x [B, N, D], conditioning = SiLU(c) [B, D].
    func forward(_ x: Tensor, conditioning: Tensor) -> (Tensor, Cache) {
        let modulation = backend.chunk(adaLN.forward(conditioning), parts: 6, axis: 1)
        let (normed1, norm1Cache) = norm1.forward(x)
        let (attentionOut, attentionCache) = attention.forward(
            backend.modulate(normed1, shift: modulation[0], scale: modulation[1]))
        let x1 = backend.gatedResidual(x, gate: modulation[2], attentionOut)
        let (normed2, norm2Cache) = norm2.forward(x1)
        let (mlpOut, mlpCache) = mlp.forward(backend.modulate(normed2, shift: modulation[3], scale: modulation[4]))
        let x2 = backend.gatedResidual(x1, gate: modulation[5], mlpOut)
        let cache = Cache(conditioning: conditioning, shift1: modulation[0], scale1: modulation[1], gate1: modulation[2],
                          shift2: modulation[3], scale2: modulation[4], gate2: modulation[5],
                          norm1: norm1Cache, normed1: normed1, attention: attentionCache, attentionOut: attentionOut,
                          norm2: norm2Cache, normed2: normed2, mlp: mlpCache, mlpOut: mlpOut)
        return (x2, cache)
    }

    /// Returns the gradients of x and of the conditioning SiLU(c).
    func backward(_ dOut: Tensor, _ cache: Cache) -> (dx: Tensor, dConditioning: Tensor) {
        // Second residual: x2 = x1 + gate₂ · mlp(modulate(norm2(x1))).
        let (dGate2, dMLPOut) = backend.gatedResidualBackward(dOut, gate: cache.gate2, y: cache.mlpOut)
        let dModulated2 = mlp.backward(dMLPOut, cache.mlp)
        let (dNormed2, dShift2, dScale2) = backend.modulateBackward(dModulated2, x: cache.normed2, scale: cache.scale2)
        let dx1 = backend.add(dOut, norm2.backward(dNormed2, cache.norm2))
        // First residual: x1 = x + gate₁ · attn(modulate(norm1(x))).
        let (dGate1, dAttentionOut) = backend.gatedResidualBackward(dx1, gate: cache.gate1, y: cache.attentionOut)
        let dModulated1 = attention.backward(dAttentionOut, cache.attention)
        let (dNormed1, dShift1, dScale1) = backend.modulateBackward(dModulated1, x: cache.normed1, scale: cache.scale1)
        let dx = backend.add(dx1, norm1.backward(dNormed1, cache.norm1))
        let dModulation = backend.concat([dShift1, dScale1, dGate1, dShift2, dScale2, dGate2], axis: 1)
        return (dx, adaLN.backward(dModulation, input: cache.conditioning))
    }
}

/// DiT's final layer: adaLN (shift, scale) on a non-affine LayerNorm, then a linear map to p·p·C_out per token.
final class DiTFinalLayer: Layer {
    struct Cache {
        let conditioning, shift, scale: Tensor
        let norm: LayerNorm.Cache, normed: Tensor, modulated: Tensor
    }

    let backend: any Backend
    let norm: LayerNorm
    let linear: Linear
    let adaLN: Linear

    /// Starts at zero (DiT zeroes the final layer), so an untrained model predicts zero.
    init(backend: any Backend, config: DiTConfig, dtype: DType) {
        let d = config.hiddenSize, p = config.patchSize
        self.backend = backend
        norm = LayerNorm(backend: backend, name: "final_layer.norm_final", dim: d, affine: false, eps: 1e-6, dtype: dtype)
        linear = Linear(backend: backend, name: "final_layer.linear", inFeatures: d,
                        outFeatures: p * p * config.outChannels, dtype: dtype, zeroInitialized: true)
        adaLN = Linear(backend: backend, name: "final_layer.adaLN_modulation.1", inFeatures: d, outFeatures: 2 * d,
                       dtype: dtype, zeroInitialized: true)
    }

    var parameters: [Parameter] { linear.parameters + adaLN.parameters }

    func forward(_ x: Tensor, conditioning: Tensor) -> (Tensor, Cache) {
        let modulation = backend.chunk(adaLN.forward(conditioning), parts: 2, axis: 1)
        let (normed, normCache) = norm.forward(x)
        let modulated = backend.modulate(normed, shift: modulation[0], scale: modulation[1])
        let cache = Cache(conditioning: conditioning, shift: modulation[0], scale: modulation[1], norm: normCache,
                          normed: normed, modulated: modulated)
        return (linear.forward(modulated), cache)
    }

    func backward(_ dOut: Tensor, _ cache: Cache) -> (dx: Tensor, dConditioning: Tensor) {
        let dModulated = linear.backward(dOut, input: cache.modulated)
        let (dNormed, dShift, dScale) = backend.modulateBackward(dModulated, x: cache.normed, scale: cache.scale)
        let dx = norm.backward(dNormed, cache.norm)
        return (dx, adaLN.backward(backend.concat([dShift, dScale], axis: 1), input: cache.conditioning))
    }
}
