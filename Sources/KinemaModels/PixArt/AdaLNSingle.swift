import KinemaNN
import KinemaTensor

/// The parameter names of the adaLN-single stem: diffusers' (PixArt, Latte) or Open-Sora's (STDiT), whose
/// checkpoints hold the same tensors under other names.
struct StemNames {
    var patchEmbed, timestepEmbedder: String
    var timestepLayers: (String, String)
    var timestepBlock, captionProjection: String
    var captionLayers: (String, String)
    var finalTable, finalLinear: String
    /// Whether positions are scaled to the training grid (diffusers' base_size) or stay integer (Open-Sora).
    var scalesToBaseGrid: Bool

    static let diffusers = StemNames(patchEmbed: "pos_embed", timestepEmbedder: "adaln_single.emb.timestep_embedder",
                                     timestepLayers: ("linear_1", "linear_2"), timestepBlock: "adaln_single.linear",
                                     captionProjection: "caption_projection", captionLayers: ("linear_1", "linear_2"),
                                     finalTable: "scale_shift_table", finalLinear: "proj_out", scalesToBaseGrid: true)
    static let openSora = StemNames(patchEmbed: "x_embedder", timestepEmbedder: "t_embedder",
                                    timestepLayers: ("mlp.0", "mlp.2"), timestepBlock: "t_block.1",
                                    captionProjection: "y_embedder.y_proj", captionLayers: ("fc1", "fc2"),
                                    finalTable: "final_layer.scale_shift_table", finalLinear: "final_layer.linear",
                                    scalesToBaseGrid: false)
}

/// diffusers' AdaLayerNormSingle without the resolution and aspect-ratio conditions (PixArt-α at 256/512 px,
/// Latte; Open-Sora's t_embedder and t_block): e = timestep_embedder(t), t₆ = linear(SiLU(e)). Every block adds its
/// own table to t₆; the final layer modulates with e itself.
final class AdaLNSingle: Layer {
    struct Cache {
        let timestep: TimestepEmbedder.Cache
        let embedded, activated: Tensor
    }

    let backend: any Backend
    let timestepEmbedder: TimestepEmbedder
    let linear: Linear

    /// N(0, 0.02²) weights, zero biases (PixArt's t_embedder and t_block).
    init(backend: any Backend, names: StemNames, dim: Int, dtype: DType, seed: UInt64) {
        self.backend = backend
        timestepEmbedder = TimestepEmbedder(backend: backend, name: names.timestepEmbedder, dim: dim,
                                            frequencyShift: 0, layerNames: names.timestepLayers, dtype: dtype, seed: seed)
        linear = Linear(backend: backend, name: names.timestepBlock, inFeatures: dim, outFeatures: 6 * dim, dtype: dtype)
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

    init(backend: any Backend, names: StemNames, dim: Int, outFeatures: Int, dtype: DType, seed: UInt64) {
        self.backend = backend
        self.dim = dim
        scaleShiftTable = modulationTable(name: names.finalTable, rows: 2, dim: dim, dtype: dtype, seed: seed,
                                          backend: backend)
        projOut = Linear(backend: backend, name: names.finalLinear, inFeatures: dim, outFeatures: outFeatures,
                         dtype: dtype, zeroInitialized: true)
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

/// PixArt's caption projection (caption_projection.linear_1, GELU (tanh), linear_2; Open-Sora's y_embedder.y_proj),
/// N(0, 0.02²) weights.
func captionProjection(backend: any Backend, names: StemNames, captionChannels: Int, dim: Int, dtype: DType,
                       seed: UInt64) -> MLP {
    let mlp = MLP(backend: backend, name: names.captionProjection, dim: captionChannels, hiddenDim: dim, outDim: dim,
                  layerNames: names.captionLayers, dtype: dtype, seed: seed)
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
    let dim: Int, baseSize: Int?, interpolationScale: Double, dtype: DType
    let backend: any Backend
    private var tables: [[Int]: Tensor] = [:]

    init(dim: Int, baseSize: Int?, interpolationScale: Double, dtype: DType, backend: any Backend) {
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

/// What PixArt, Latte and STDiT share around their blocks: the patch embedding with 2D sin-cos positions,
/// adaLN-single, the caption projection, and the final layer with unpatchify — forward and backward. A model lays
/// its parameters out as `inputLayers`, its blocks, then `finalLayer` (diffusers' order).
final class AdaLNSingleStem {
    struct Cache {
        let gridHeight, gridWidth: Int
        let patchEmbed: PatchEmbed.Cache
        let adaLN: AdaLNSingle.Cache
        let captionProjection: MLP.Cache
    }

    let config: PixArtConfig
    let backend: any Backend
    let posEmbed: PatchEmbed
    let adaLN: AdaLNSingle
    let captionProjection: MLP
    let finalLayer: AdaLNSingleFinalLayer
    let positions: PositionTables

    /// PixArt's initialisation: Xavier-uniform patch embedding, N(0, 0.02²) timestep and caption embedders and
    /// adaLN-single, zero proj_out (an untrained model predicts zero), N(0, 1/D) modulation table.
    init(config: PixArtConfig, names: StemNames = .diffusers, backend: any Backend, dtype: DType, layerDType: DType,
         seed: UInt64) {
        self.config = config
        self.backend = backend
        let d = config.hiddenSize
        posEmbed = PatchEmbed(backend: backend, name: names.patchEmbed, patchSize: config.patchSize,
                              inChannels: config.inChannels, dim: d, dtype: layerDType, seed: seed)
        adaLN = AdaLNSingle(backend: backend, names: names, dim: d, dtype: layerDType, seed: seed)
        captionProjection = KinemaModels.captionProjection(backend: backend, names: names,
                                                           captionChannels: config.captionChannels, dim: d,
                                                           dtype: layerDType, seed: seed)
        finalLayer = AdaLNSingleFinalLayer(backend: backend, names: names, dim: d,
                                           outFeatures: config.patchSize * config.patchSize * config.outChannels,
                                           dtype: layerDType, seed: seed)
        positions = PositionTables(dim: d, baseSize: names.scalesToBaseGrid ? config.baseGrid : nil,
                                   interpolationScale: config.interpolationScale, dtype: dtype, backend: backend)
    }

    /// The model's parameters in diffusers' order: the embedders, `blocks`, the final layer.
    func makeArena(blocks: [Layer], dtype: DType, keepsMaster: Bool) -> ParameterArena {
        let layers: [Layer] = [posEmbed, adaLN, captionProjection] + blocks + [finalLayer]
        return ParameterArena(parameters: layers.flatMap(\.parameters), computeDType: dtype, backend: backend,
                              keepsMaster: keepsMaster, packedRuns: KinemaNN.packedRuns(of: layers))
    }

    /// Videos [B, C, F, H, W] as their frames [B·F, C, H, W] (an image model's input), and back.
    func frames(_ videos: Tensor) -> Tensor {
        let (batch, channels, count) = (videos.shape[0], videos.shape[1], videos.shape[2])
        return backend.permute(videos, [0, 2, 1, 3, 4])
            .reshaped([batch * count, channels, videos.shape[3], videos.shape[4]])
    }

    func videos(_ frames: Tensor, batch: Int) -> Tensor {
        let count = frames.shape[0] / batch
        return backend.permute(frames.reshaped([batch, count] + frames.shape.dropFirst()), [0, 2, 1, 3, 4])
    }

    /// Stops with a message unless timesteps are [B] and caption states [B, L, captionChannels].
    func checkConditions(_ model: String, batch: Int, timesteps: Tensor, captions: Tensor) {
        precondition(captions.rank == 3 && captions.shape[0] == batch && captions.shape[2] == config.captionChannels,
                     "\(model) expects captions [\(batch), L, \(config.captionChannels)], got \(captions.shape)")
        precondition(timesteps.shape == [batch], "\(model) expects timesteps [\(batch)], got \(timesteps.shape)")
    }

    /// Images [N, C, H, W] (the compute dtype) → tokens [N, h·w, D] with positions; timesteps [B] → e [B, D] and
    /// t₆ [B, 6D]; caption states [B, L, C_text] → projected captions [B, L, D].
    func embed(_ images: Tensor, timesteps: Tensor, captions: Tensor)
        -> (tokens: Tensor, embedded: Tensor, t6: Tensor, captions: Tensor, Cache) {
        let p = config.patchSize, count = images.shape[0]
        let (gridHeight, gridWidth) = (images.shape[2] / p, images.shape[3] / p)
        let (patches, patchCache) = posEmbed.forward(images)
        let tokens = backend.addBias(patches.reshaped([count, -1]),
                                     positions.table(gridHeight: gridHeight, gridWidth: gridWidth))
            .reshaped([count, gridHeight * gridWidth, config.hiddenSize])
        let (embedded, t6, adaLNCache) = adaLN.forward(timesteps)
        let (projected, captionCache) = captionProjection.forward(captions)
        return (tokens, embedded, t6, projected,
                Cache(gridHeight: gridHeight, gridWidth: gridWidth, patchEmbed: patchCache, adaLN: adaLNCache,
                      captionProjection: captionCache))
    }

    /// The final layer (modulated by e, one row per stream sample) and unpatchify → images [N, C_out, H, W], where
    /// a stream sample may hold several images' tokens back to back (STDiT's frames).
    func output(_ stream: ResidualStream, embedded: Tensor, _ cache: Cache) -> (Tensor, AdaLNSingleFinalLayer.Cache) {
        let (streamTokens, finalCache) = finalLayer.forward(stream, embedded: embedded)
        let grid = cache.gridHeight * cache.gridWidth, width = streamTokens.shape[streamTokens.rank - 1]
        let tokens = streamTokens.reshaped([streamTokens.count / (grid * width), grid, width])
        return (Patches.unpatchify(tokens, channels: config.outChannels, patchSize: config.patchSize,
                                   gridHeight: cache.gridHeight, gridWidth: cache.gridWidth, backend: backend),
                finalCache)
    }

    /// From the gradient of the output images: the gradients of the stream and of e.
    func outputBackward(_ dImages: Tensor, _ cache: AdaLNSingleFinalLayer.Cache) -> (dx: Tensor, dEmbedded: Tensor) {
        let dTokens = Patches.unpatchifyBackward(dImages, patchSize: config.patchSize, backend: backend)
        return finalLayer.backward(dTokens.reshaped(Array(cache.modulated.shape.dropLast()) + [dTokens.shape[2]]), cache)
    }

    /// The embedders' gradients from those of the tokens, e, t₆ and the projected captions.
    func embedBackward(dTokens: Tensor, dEmbedded: Tensor, dt6: Tensor, dCaptions: Tensor, _ cache: Cache) {
        adaLN.backward(dEmbedded: dEmbedded, dt6: dt6, cache.adaLN)
        captionProjection.accumulateGradients(dCaptions, cache.captionProjection)
        posEmbed.backward(dTokens, cache.patchEmbed)
    }
}
