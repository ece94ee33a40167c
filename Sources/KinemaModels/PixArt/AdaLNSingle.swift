import KinemaNN
import KinemaTensor

/// diffusers' AdaLayerNormSingle without the resolution and aspect-ratio conditions (PixArt-α at 256/512 px,
/// Latte): e = emb.timestep_embedder(t), t₆ = linear(SiLU(e)). Every block adds its own table to t₆; the final
/// layer modulates with e itself.
final class AdaLNSingle: Layer {
    struct Cache {
        let timestep: TimestepEmbedder.Cache
        let embedded, activated: Tensor
    }

    let backend: any Backend
    let timestepEmbedder: TimestepEmbedder
    let linear: Linear

    /// N(0, 0.02²) weights, zero biases (PixArt's t_embedder and t_block).
    init(backend: any Backend, name: String, dim: Int, dtype: DType, seed: UInt64) {
        self.backend = backend
        timestepEmbedder = TimestepEmbedder(backend: backend, name: "\(name).emb.timestep_embedder", dim: dim,
                                            frequencyShift: 0, layerNames: ("linear_1", "linear_2"), dtype: dtype,
                                            seed: seed)
        linear = Linear(backend: backend, name: "\(name).linear", inFeatures: dim, outFeatures: 6 * dim, dtype: dtype)
        initializeNormal(linear, std: 0.02, seed: seed, backend: backend)
    }

    var parameters: [Parameter] { timestepEmbedder.parameters + linear.parameters }

    /// timesteps [B] → e [B, D] and t₆ [B, 6D].
    func forward(_ timesteps: Tensor) -> (embedded: Tensor, t6: Tensor, Cache) {
        let (embedded, timestepCache) = timestepEmbedder.forward(timesteps)
        let activated = backend.silu(embedded)
        return (embedded, linear.forward(activated),
                Cache(timestep: timestepCache, embedded: embedded, activated: activated))
    }

    /// From the gradients of e (its direct uses) and of t₆.
    func backward(dEmbedded: Tensor, dt6: Tensor, _ cache: Cache) {
        let dActivated = linear.backward(dt6, input: cache.activated)
        timestepEmbedder.backward(backend.add(dEmbedded, backend.siluBackward(dActivated, x: cache.embedded)),
                                  cache.timestep)
    }
}

/// PixArt's and Latte's output layer: norm_out (no affine) modulated by shift = table[0] + e, scale = table[1] + e,
/// then proj_out to p·p·C_out per token. proj_out starts at zero, so an untrained model predicts zero.
final class AdaLNSingleFinalLayer: Layer {
    struct Cache {
        let scale: Tensor, norm: LayerNorm.Cache, modulated: Tensor
    }

    let backend: any Backend
    let dim: Int
    /// [2, D], N(0, 1/D).
    let scaleShiftTable: Parameter
    let projOut: Linear

    init(backend: any Backend, dim: Int, outFeatures: Int, dtype: DType, seed: UInt64) {
        self.backend = backend
        self.dim = dim
        scaleShiftTable = modulationTable(name: "scale_shift_table", rows: 2, dim: dim, dtype: dtype, seed: seed,
                                          backend: backend)
        projOut = Linear(backend: backend, name: "proj_out", inFeatures: dim, outFeatures: outFeatures, dtype: dtype,
                         zeroInitialized: true)
    }

    var parameters: [Parameter] { [scaleShiftTable] + projOut.parameters }

    /// The stream [B', N, D] and e [B', D] (one row per stream sample) → tokens [B', N, p·p·C_out].
    func forward(_ stream: ResidualStream, embedded: Tensor) -> (Tensor, Cache) {
        let modulation = backend.chunk(backend.addBias(backend.concat([embedded, embedded], axis: 1),
                                                       scaleShiftTable.value.reshaped([2 * dim])), parts: 2, axis: 1)
        let (x, modulated, mean, rstd) = stream.layerNormModulate(backend, shift: modulation[0], scale: modulation[1],
                                                                  eps: 1e-6)
        return (projOut.forward(modulated),
                Cache(scale: modulation[1], norm: LayerNorm.Cache(x: x, mean: mean, rstd: rstd), modulated: modulated))
    }

    /// Returns the gradients of the stream and of e.
    func backward(_ dTokens: Tensor, _ cache: Cache) -> (dx: Tensor, dEmbedded: Tensor) {
        let dModulated = projOut.backward(dTokens, input: cache.modulated)
        let (dx, dShift, dScale) = backend.layerNormModulateBackward(
            dModulated, x: cache.norm.x, scale: cache.scale, mean: cache.norm.mean, rstd: cache.norm.rstd, eps: 1e-6,
            residual: nil)
        backend.accumulateBiasGradient(backend.concat([dShift, dScale], axis: 1),
                                       into: scaleShiftTable.gradient.reshaped([2 * dim]))
        return (dx, backend.add(dShift, dScale))
    }
}

/// PixArt's caption projection (caption_projection.linear_1, GELU (tanh), linear_2), N(0, 0.02²) weights.
func captionProjection(backend: any Backend, captionChannels: Int, dim: Int, dtype: DType, seed: UInt64) -> MLP {
    let mlp = MLP(backend: backend, name: "caption_projection", dim: captionChannels, hiddenDim: dim, outDim: dim,
                  layerNames: ("linear_1", "linear_2"), dtype: dtype, seed: seed)
    for linear in [mlp.fc1, mlp.fc2] { initializeNormal(linear, std: 0.02, seed: seed, backend: backend) }
    return mlp
}

/// A [rows, D] modulation table drawn N(0, 1/D), as diffusers' `torch.randn(rows, dim) / dim**0.5`.
func modulationTable(name: String, rows: Int, dim: Int, dtype: DType, seed: UInt64, backend: any Backend) -> Parameter {
    Parameter(name: name, value: backend.upload(Initializers.normal(count: rows * dim, std: 1 / Double(dim).squareRoot(),
                                                                    seed: seed, stream: initializerStream(for: name)),
                                                shape: [rows, dim], dtype: dtype), backend: backend)
}

/// Redraws a linear's weight N(0, std²) from its own stream (before the model's arena takes it).
func initializeNormal(_ linear: Linear, std: Double, seed: UInt64, backend: any Backend) {
    let weight = linear.weight
    backend.copy(backend.upload(Initializers.normal(count: weight.value.count, std: std, seed: seed,
                                                    stream: initializerStream(for: weight.name)),
                                shape: weight.value.shape, dtype: weight.value.dtype), into: weight.value)
}

/// The 2D sin-cos tables a model adds to its patch tokens, one per patch grid, made once (flattened [N·D]).
final class PositionTables {
    let dim: Int, baseSize: Int, interpolationScale: Double, dtype: DType
    let backend: any Backend
    private var tables: [[Int]: Tensor] = [:]

    init(dim: Int, baseSize: Int, interpolationScale: Double, dtype: DType, backend: any Backend) {
        (self.dim, self.baseSize, self.interpolationScale, self.dtype, self.backend) =
            (dim, baseSize, interpolationScale, dtype, backend)
    }

    func table(gridHeight: Int, gridWidth: Int) -> Tensor {
        if let table = tables[[gridHeight, gridWidth]] { return table }
        let values = PositionalEmbedding.sinCos2D(dim: dim, gridHeight: gridHeight, gridWidth: gridWidth,
                                                  baseSize: baseSize, interpolationScale: interpolationScale)
        let table = backend.upload(values, shape: [values.count], dtype: dtype)
        tables[[gridHeight, gridWidth]] = table
        return table
    }
}
