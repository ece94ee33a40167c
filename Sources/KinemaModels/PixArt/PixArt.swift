import Foundation
import KinemaNN
import KinemaTensor

/// PixArt-α's text-to-image transformer, forward and backward by hand, with the parameter names of diffusers'
/// `PixArtTransformer2DModel` (so its checkpoints load by name):
///   tokens = pos_embed(x) + 2D sin-cos (scaled to the training grid, so any multiple of the patch runs)
///   e, t₆ = adaln_single(t)                                          — t₆ [B, 6D] shared by every block
///   captions = caption_projection(encoder_hidden_states)            — Linear, GELU (tanh), Linear
///   blocks (AdaLNSingleBlock with cross-attention), then the final layer modulated by e, unpatchify.
public final class PixArt {
    public struct Cache {
        let stem: AdaLNSingleStem.Cache
        let blocks: [AdaLNSingleBlock.Cache]
        let final: AdaLNSingleFinalLayer.Cache
    }

    public let config: PixArtConfig
    public let backend: any Backend
    public let dtype: DType
    let stem: AdaLNSingleStem
    let blocks: [AdaLNSingleBlock]
    public let arena: ParameterArena

    /// PixArt's initialisation (see `AdaLNSingleStem`), with zero cross-attention outputs and N(0, 1/D) block
    /// modulation tables.
    public init(config: PixArtConfig, backend: any Backend, dtype: DType = .f32, seed: UInt64 = 0,
                keepsMaster: Bool = true) throws {
        try config.validate()
        self.config = config
        self.backend = backend
        self.dtype = dtype
        let layerDType: DType = dtype == .f64 ? .f64 : .f32
        stem = AdaLNSingleStem(config: config, backend: backend, dtype: dtype, layerDType: layerDType, seed: seed)
        blocks = (0..<config.depth).map {
            AdaLNSingleBlock(backend: backend, name: "transformer_blocks.\($0)", config: config, crossAttention: true,
                             dtype: layerDType, seed: seed)
        }
        arena = stem.makeArena(blocks: blocks, dtype: dtype, keepsMaster: keepsMaster)
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
        let batch = x.shape[0]
        stem.checkConditions("PixArt", batch: batch, timesteps: timesteps, captions: captionInput)
        let (tokens, embedded, t6, captions, stemCache) = stem.embed(compute(x), timesteps: timesteps,
                                                                     captions: compute(captionInput))
        var stream = ResidualStream(tokens)
        var blockCaches: [AdaLNSingleBlock.Cache] = []
        for block in blocks {
            let (next, cache) = block.forward(stream, t6: t6, captions: captions, captionMask: captionMask)
            stream = next
            blockCaches.append(cache)
        }
        let (out, finalCache) = stem.output(stream, embedded: embedded, stemCache)
        return (out.dtype == x.dtype ? out : backend.cast(out, to: x.dtype),
                Cache(stem: stemCache, blocks: blockCaches, final: finalCache))
    }

    /// Accumulates every parameter's gradient for the output gradient dOut [B, outChannels, H, W]. The caption
    /// states are inputs (a frozen text encoder's), so their gradient is not formed.
    public func backward(_ dOut: Tensor, _ cache: Cache) {
        let (dStream, dEmbedded) = stem.outputBackward(compute(dOut), cache.final)
        var dx = dStream, dt6: Tensor?, dCaptions: Tensor?
        for (block, blockCache) in zip(blocks, cache.blocks).reversed() {
            let (dBlockIn, dBlockT6, dBlockCaptions) = block.backward(dx, blockCache)
            dx = dBlockIn
            dt6 = dt6.map { backend.add($0, dBlockT6) } ?? dBlockT6
            dCaptions = dCaptions.map { backend.add($0, dBlockCaptions!) } ?? dBlockCaptions
        }
        stem.embedBackward(dTokens: dx, dEmbedded: dEmbedded, dt6: dt6!, dCaptions: dCaptions!, cache.stem)
    }

    public func zeroGradients() { arena.zeroGradients() }

    /// The model's tensors under diffusers' names (the full-precision weights).
    public func stateDict() -> [(name: String, tensor: Tensor)] {
        parameters.map { ($0.name, $0.weights) }
    }

    private func compute(_ x: Tensor) -> Tensor { x.dtype == dtype ? x : backend.cast(x, to: dtype) }
}

/// Loads a diffusers `PixArtTransformer2DModel` folder (config.json + diffusion_pytorch_model.safetensors).
public enum PixArtCheckpoint {
    public static func load(folder: String, backend: any Backend, dtype: DType = .f32,
                            keepsMaster: Bool = true) throws -> PixArt {
        let (config, _, file, weightsPath) = try readDiffusersFolder(folder, className: "PixArtTransformer2DModel")
        let model = try PixArt(config: config, backend: backend, dtype: dtype, keepsMaster: keepsMaster)
        try model.arena.loadParameters(from: weightsPath, expected: "a PixArtTransformer2DModel of the same "
                                       + "configuration") { name in
            file.contains(name) ? try file.tensor(name, on: backend) : nil
        }
        return model
    }

    /// config.json (as a PixArtConfig, with the feed-forward width read off the weights, and as JSON), the weights
    /// file and its path, of a diffusers folder of PixArt-style blocks.
    static func readDiffusersFolder(_ folder: String, className: String) throws
        -> (PixArtConfig, json: [String: Any], SafetensorsFile, String) {
        let (json, configPath, file, weightsPath) = try DiffusersFolder.open(folder,
                                                                             weights: "diffusion_pytorch_model.safetensors")
        if let name = json["_class_name"] as? String, name != className {
            throw ModelError.badCheckpoint(path: configPath, reason: "a \(name), not a \(className)")
        }
        let config = try PixArtConfig(diffusersConfig: json, path: configPath,
                                      mlpHidden: try file.info("transformer_blocks.0.ff.net.0.proj.weight").shape[0])
        return (config, json, file, weightsPath)
    }
}
