import Foundation
import KinemaNN
import KinemaTensor

/// PixArt-α's text-to-image transformer, forward and backward by hand, with the parameter names of diffusers'
/// `PixArtTransformer2DModel` (so its checkpoints load by name):
///   tokens = pos_embed(x) + 2D sin-cos (scaled to the training grid, so any multiple of the patch runs)
///   e = adaln_single.emb(t);  t₆ = adaln_single.linear(SiLU(e))     — one [B, 6D] shared by every block
///   captions = caption_projection(encoder_hidden_states)            — Linear, GELU (tanh), Linear
///   blocks (PixArtBlock), then norm_out modulated by scale_shift_table + e, proj_out, unpatchify.
public final class PixArt {
    public struct Cache {
        let gridHeight, gridWidth: Int
        let patchEmbed: PatchEmbed.Cache
        let timestep: TimestepEmbedder.Cache
        let embedded: Tensor, activated: Tensor
        let captionInput: Tensor, captions: Tensor, captionProjection: MLP.Cache
        let blocks: [PixArtBlock.Cache]
        let final: FinalCache
    }

    struct FinalCache {
        let scale: Tensor, norm: LayerNorm.Cache, modulated: Tensor
    }

    public let config: PixArtConfig
    public let backend: any Backend
    public let dtype: DType
    let posEmbed: PatchEmbed
    let timestepEmbedder: TimestepEmbedder
    let adaLN: Linear
    let captionProjection: MLP
    let blocks: [PixArtBlock]
    let finalTable: Parameter
    let projOut: Linear
    public let arena: ParameterArena
    /// Sin-cos tables by patch grid (height, width), flattened [N·D] in the compute dtype.
    private var positionTables: [[Int]: Tensor] = [:]

    /// PixArt's initialisation: Xavier-uniform linears, N(0, 0.02²) timestep and caption embedders and adaLN-single,
    /// zero cross-attention outputs and zero proj_out (an untrained model predicts zero), N(0, 1/D) modulation tables.
    public init(config: PixArtConfig, backend: any Backend, dtype: DType = .f32, seed: UInt64 = 0,
                keepsMaster: Bool = true) throws {
        try config.validate()
        self.config = config
        self.backend = backend
        self.dtype = dtype
        let d = config.hiddenSize, layerDType: DType = dtype == .f64 ? .f64 : .f32
        posEmbed = PatchEmbed(backend: backend, name: "pos_embed", patchSize: config.patchSize,
                              inChannels: config.inChannels, dim: d, dtype: layerDType, seed: seed)
        timestepEmbedder = TimestepEmbedder(backend: backend, name: "adaln_single.emb.timestep_embedder", dim: d,
                                            frequencyShift: 0, layerNames: ("linear_1", "linear_2"),
                                            dtype: layerDType, seed: seed)
        adaLN = Linear(backend: backend, name: "adaln_single.linear", inFeatures: d, outFeatures: 6 * d,
                       dtype: layerDType, seed: seed)
        captionProjection = MLP(backend: backend, name: "caption_projection", dim: config.captionChannels,
                                hiddenDim: d, outDim: d, layerNames: ("linear_1", "linear_2"), dtype: layerDType,
                                seed: seed)
        blocks = (0..<config.depth).map {
            PixArtBlock(backend: backend, name: "transformer_blocks.\($0)", config: config, dtype: layerDType, seed: seed)
        }
        finalTable = Parameter(name: "scale_shift_table", value: backend.upload(
            Initializers.normal(count: 2 * d, std: 1 / Double(d).squareRoot(), seed: seed,
                                stream: initializerStream(for: "scale_shift_table")), shape: [2, d], dtype: layerDType),
                               backend: backend)
        projOut = Linear(backend: backend, name: "proj_out", inFeatures: d,
                         outFeatures: config.patchSize * config.patchSize * config.outChannels, dtype: layerDType,
                         zeroInitialized: true)
        for linear in [adaLN, captionProjection.fc1, captionProjection.fc2] {
            backend.copy(backend.upload(Initializers.normal(count: linear.weight.value.count, std: 0.02, seed: seed,
                                                            stream: initializerStream(for: linear.weight.name)),
                                        shape: linear.weight.value.shape, dtype: layerDType), into: linear.weight.value)
        }
        let layers: [Layer] = [posEmbed, timestepEmbedder, adaLN, captionProjection] + blocks
        arena = ParameterArena(parameters: layers.flatMap(\.parameters) + [finalTable] + projOut.parameters,
                               computeDType: dtype, backend: backend, keepsMaster: keepsMaster,
                               packedRuns: KinemaNN.packedRuns(of: layers))
    }

    public var parameters: [Parameter] { arena.parameters }
    public var parameterCount: Int { parameters.map(\.value.count).reduce(0, +) }
    /// Inputs and outputs are f32 (f64 for an f64 model), whatever the compute dtype.
    public var ioDType: DType { dtype == .f64 ? .f64 : .f32 }

    /// x [B, C, H, W] (H, W multiples of the patch), timesteps [B], caption states [B, L, captionChannels] and their
    /// mask (i32 [B, L], 1 = a real token; nil = all real) → [B, outChannels, H, W] in x's dtype.
    public func forward(_ x: Tensor, timesteps: Tensor, captions captionInput: Tensor,
                        captionMask: Tensor?) -> (Tensor, Cache) {
        let p = config.patchSize
        precondition(x.rank == 4 && x.shape[1] == config.inChannels && x.shape[2] % p == 0 && x.shape[3] % p == 0,
                     "PixArt expects [B, \(config.inChannels), H, W] with H, W multiples of \(p), got \(x.shape)")
        let batch = x.shape[0], gridHeight = x.shape[2] / p, gridWidth = x.shape[3] / p
        precondition(captionInput.rank == 3 && captionInput.shape[0] == batch
                     && captionInput.shape[2] == config.captionChannels,
                     "PixArt expects captions [\(batch), L, \(config.captionChannels)], got \(captionInput.shape)")
        precondition(timesteps.shape == [batch], "PixArt expects timesteps [\(batch)], got \(timesteps.shape)")
        let (patches, patchCache) = posEmbed.forward(compute(x))
        let tokens = backend.addBias(patches.reshaped([batch, -1]), positionTable(gridHeight, gridWidth))
            .reshaped([batch, gridHeight * gridWidth, config.hiddenSize])
        let (embedded, timestepCache) = timestepEmbedder.forward(timesteps)
        let activated = backend.silu(embedded)
        let t6 = adaLN.forward(activated)
        let captionCompute = compute(captionInput)
        let (captions, captionCache) = captionProjection.forward(captionCompute)
        var stream = ResidualStream(tokens)
        var blockCaches: [PixArtBlock.Cache] = []
        for block in blocks {
            let (next, cache) = block.forward(stream, t6: t6, captions: captions, captionMask: captionMask)
            stream = next
            blockCaches.append(cache)
        }
        // norm_out modulated by scale_shift_table + e: shift = table[0] + e, scale = table[1] + e.
        let d = config.hiddenSize
        let final = backend.chunk(backend.addBias(backend.concat([embedded, embedded], axis: 1),
                                                  finalTable.value.reshaped([2 * d])), parts: 2, axis: 1)
        let (xFinal, modulated, mean, rstd) = stream.layerNormModulate(backend, shift: final[0], scale: final[1],
                                                                       eps: 1e-6)
        let out = Patches.unpatchify(projOut.forward(modulated), channels: config.outChannels, patchSize: p,
                                     gridHeight: gridHeight, gridWidth: gridWidth, backend: backend)
        let cache = Cache(gridHeight: gridHeight, gridWidth: gridWidth, patchEmbed: patchCache,
                          timestep: timestepCache, embedded: embedded, activated: activated,
                          captionInput: captionCompute, captions: captions, captionProjection: captionCache,
                          blocks: blockCaches,
                          final: FinalCache(scale: final[1], norm: LayerNorm.Cache(x: xFinal, mean: mean, rstd: rstd),
                                            modulated: modulated))
        return (out.dtype == x.dtype ? out : backend.cast(out, to: x.dtype), cache)
    }

    /// Accumulates every parameter's gradient for the output gradient dOut [B, outChannels, H, W]. The caption
    /// states are inputs (a frozen text encoder's), so their gradient is not formed.
    public func backward(_ dOut: Tensor, _ cache: Cache) {
        let d = config.hiddenSize
        let dTokens = Patches.unpatchifyBackward(compute(dOut), patchSize: config.patchSize, backend: backend)
        let dModulated = projOut.backward(dTokens, input: cache.final.modulated)
        let (dStream, dShift, dScale) = backend.layerNormModulateBackward(
            dModulated, x: cache.final.norm.x, scale: cache.final.scale, mean: cache.final.norm.mean,
            rstd: cache.final.norm.rstd, eps: 1e-6, residual: nil)
        let dFinal = backend.concat([dShift, dScale], axis: 1)
        backend.accumulateBiasGradient(dFinal, into: finalTable.gradient.reshaped([2 * d]))
        var dEmbedded = backend.add(dShift, dScale)
        var dx = dStream
        var dt6: Tensor?, dCaptions: Tensor?
        for (block, blockCache) in zip(blocks, cache.blocks).reversed() {
            let (dBlockIn, dBlockT6, dBlockCaptions) = block.backward(dx, blockCache)
            dx = dBlockIn
            dt6 = dt6.map { backend.add($0, dBlockT6) } ?? dBlockT6
            dCaptions = dCaptions.map { backend.add($0, dBlockCaptions) } ?? dBlockCaptions
        }
        let dActivated = adaLN.backward(dt6!, input: cache.activated)
        dEmbedded = backend.add(dEmbedded, backend.siluBackward(dActivated, x: cache.embedded))
        timestepEmbedder.backward(dEmbedded, cache.timestep)
        let dHidden = captionProjection.fc2.backward(dCaptions!, input: cache.captionProjection.activated,
                                                     geluInput: cache.captionProjection.hidden)
        captionProjection.fc1.accumulateGradients(dHidden, input: cache.captionInput)
        posEmbed.backward(dx, cache.patchEmbed)
    }

    public func zeroGradients() { arena.zeroGradients() }

    /// The model's tensors under diffusers' names (the full-precision weights).
    public func stateDict() -> [(name: String, tensor: Tensor)] {
        parameters.map { ($0.name, $0.weights) }
    }

    private func compute(_ x: Tensor) -> Tensor { x.dtype == dtype ? x : backend.cast(x, to: dtype) }

    private func positionTable(_ gridHeight: Int, _ gridWidth: Int) -> Tensor {
        if let table = positionTables[[gridHeight, gridWidth]] { return table }
        let values = PositionalEmbedding.sinCos2D(dim: config.hiddenSize, gridHeight: gridHeight, gridWidth: gridWidth,
                                                  baseSize: config.baseGrid,
                                                  interpolationScale: config.interpolationScale)
        let table = backend.upload(values, shape: [values.count], dtype: dtype)
        positionTables[[gridHeight, gridWidth]] = table
        return table
    }
}

/// Loads a diffusers `PixArtTransformer2DModel` folder (config.json + diffusion_pytorch_model.safetensors).
public enum PixArtCheckpoint {
    public static func load(folder: String, backend: any Backend, dtype: DType = .f32,
                            keepsMaster: Bool = true) throws -> PixArt {
        let folderURL = URL(fileURLWithPath: folder)
        let configURL = folderURL.appendingPathComponent("config.json")
        let weightsURL = folderURL.appendingPathComponent("diffusion_pytorch_model.safetensors")
        guard let data = FileManager.default.contents(atPath: configURL.path),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelError.badCheckpoint(path: configURL.path, reason: "missing or unreadable config.json")
        }
        let file = try SafetensorsFile(url: weightsURL)
        let config = try PixArtConfig(diffusersConfig: json, path: configURL.path,
                                      mlpHidden: try file.info("transformer_blocks.0.ff.net.0.proj.weight").shape[0])
        let model = try PixArt(config: config, backend: backend, dtype: dtype, keepsMaster: keepsMaster)
        try model.arena.loadParameters(from: weightsURL.path, expected: "a PixArtTransformer2DModel of the same "
                                       + "configuration") { name in
            file.contains(name) ? try file.tensor(name, on: backend) : nil
        }
        return model
    }
}
