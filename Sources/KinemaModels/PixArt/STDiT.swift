import Foundation
import KinemaNN
import KinemaTensor

/// Open-Sora 1.0's STDiT (spatial-temporal DiT; its parameter names, with the packed qkv and kv projections read
/// apart): PixArt's embedders and output layer, STDiT blocks (spatial, temporal and cross-attention in each).
///   tokens [B, T·S, D] = x_embedder(x per frame) + 2D sin-cos (positions / space_scale)
///   e, t₆ = t_embedder(t), t_block(SiLU(e));  captions = y_embedder.y_proj(y)
///   blocks (block 0 adds the 1D sin-cos over frames, positions / time_scale, to its temporal input)
///   final layer (modulated by e), unpatchify per frame → [B, C_out, T, H, W]
/// The patch is (1, p, p): one frame deep. Unlike Open-Sora's own 2D table, a non-square grid's positions follow
/// diffusers' layout (rows of the grid by height), the one Kinema's other models use.
public final class STDiT {
    public struct Cache {
        let batch, frames: Int
        let stem: AdaLNSingleStem.Cache
        let blocks: [STDiTBlock.Cache]
        let final: AdaLNSingleFinalLayer.Cache
    }

    public let config: PixArtConfig
    /// Open-Sora's `time_scale`: frame positions are divided by it (space_scale is the config's interpolation scale).
    public let timeScale: Double
    public let backend: any Backend
    public let dtype: DType
    let stem: AdaLNSingleStem
    let blocks: [STDiTBlock]
    let temporalPositions: TemporalPositions
    public let arena: ParameterArena
    /// Open-Sora's `y_embedder.y_embedding` [model_max_length, caption_channels], its null caption for classifier-free
    /// guidance, when a checkpoint provides one (a buffer there: never trained).
    public internal(set) var nullCaption: Tensor?

    public init(config: PixArtConfig, timeScale: Double = 1, backend: any Backend, dtype: DType = .f32,
                seed: UInt64 = 0, keepsMaster: Bool = true) throws {
        try config.validate()
        guard timeScale > 0, config.interpolationScale > 0 else {
            throw ModelError.invalidConfig("STDiT: space and time scales must be positive")
        }
        self.config = config
        self.timeScale = timeScale
        self.backend = backend
        self.dtype = dtype
        let layerDType: DType = dtype == .f64 ? .f64 : .f32
        stem = AdaLNSingleStem(config: config, names: .openSora, backend: backend, dtype: dtype, layerDType: layerDType,
                               seed: seed)
        blocks = (0..<config.depth).map {
            STDiTBlock(backend: backend, name: "blocks.\($0)", config: config, dtype: layerDType, seed: seed)
        }
        temporalPositions = TemporalPositions(backend: backend, dim: config.hiddenSize, dtype: dtype,
                                              timeScale: timeScale)
        arena = stem.makeArena(blocks: blocks, dtype: dtype, keepsMaster: keepsMaster)
    }

    public var parameters: [Parameter] { arena.parameters }

    /// x [B, C, T, H, W] (H, W multiples of the patch), timesteps [B], caption states [B, L, captionChannels] and
    /// their mask (i32 [B, L] or nil) → [B, outChannels, T, H, W] in x's dtype.
    public func forward(_ x: Tensor, timesteps: Tensor, captions captionInput: Tensor,
                        captionMask: Tensor?) -> (Tensor, Cache) {
        let p = config.patchSize
        precondition(x.rank == 5 && x.shape[1] == config.inChannels && x.shape[3] % p == 0 && x.shape[4] % p == 0,
                     "STDiT expects [B, \(config.inChannels), T, H, W] with H, W multiples of \(p), got \(x.shape)")
        let (batch, frames) = (x.shape[0], x.shape[2])
        let patches = (x.shape[3] / p) * (x.shape[4] / p)
        stem.checkConditions("STDiT", batch: batch, timesteps: timesteps, captions: captionInput)
        let perFrame = stem.frames(compute(x))
        let (tokens, embedded, t6, captions, stemCache) = stem.embed(perFrame, timesteps: timesteps,
                                                                     captions: compute(captionInput))
        var stream = ResidualStream(tokens.reshaped([batch, frames * patches, config.hiddenSize]))
        var caches: [STDiTBlock.Cache] = []
        for (index, block) in blocks.enumerated() {
            let (next, cache) = block.forward(stream, t6: t6, captions: captions, captionMask: captionMask,
                                              frames: frames, patches: patches,
                                              temporalPositions: index == 0 ? temporalPositions : nil)
            stream = next
            caches.append(cache)
        }
        let (images, finalCache) = stem.output(stream, embedded: embedded, stemCache)
        let out = stem.videos(images, batch: batch)
        let cache = Cache(batch: batch, frames: frames, stem: stemCache, blocks: caches, final: finalCache)
        return (out.dtype == x.dtype ? out : backend.cast(out, to: x.dtype), cache)
    }

    /// Accumulates every parameter's gradient for the output gradient dOut [B, outChannels, T, H, W].
    public func backward(_ dOut: Tensor, _ cache: Cache) {
        let (batch, frames) = (cache.batch, cache.frames)
        let patches = cache.stem.gridHeight * cache.stem.gridWidth
        let dImages = stem.frames(compute(dOut))
        let (dStream, dEmbedded) = stem.outputBackward(dImages, cache.final)
        var dx = dStream
        var dt6: Tensor?, dCaptions: Tensor?
        func accumulate(_ total: inout Tensor?, _ part: Tensor) { total = total.map { backend.add($0, part) } ?? part }
        for (block, blockCache) in zip(blocks, cache.blocks).reversed() {
            let (dIn, dBlockT6, dBlockCaptions) = block.backward(dx, blockCache, frames: frames, patches: patches)
            accumulate(&dt6, dBlockT6)
            accumulate(&dCaptions, dBlockCaptions)
            dx = dIn
        }
        stem.embedBackward(dTokens: dx.reshaped([batch * frames, patches, config.hiddenSize]), dEmbedded: dEmbedded,
                           dt6: dt6!, dCaptions: dCaptions!, cache.stem)
    }

    public func zeroGradients() { arena.zeroGradients() }

    /// Loads every parameter by Kinema's name (full precision into the master, then the compute copy).
    public func loadParameters(from source: String, _ lookup: (String) throws -> Tensor?) throws {
        try arena.loadParameters(from: source, expected: "an STDiT of the same configuration", lookup)
    }

    public func stateDict() -> [(name: String, tensor: Tensor)] { parameters.map { ($0.name, $0.weights) } }

    private func compute(_ x: Tensor) -> Tensor { x.dtype == dtype ? x : backend.cast(x, to: dtype) }
}

/// Reads Open-Sora's STDiT checkpoints (a safetensors state dict): the packed `attn.qkv`, `attn_temp.qkv` and
/// `cross_attn.kv_linear` rows are split into the q, k and v Kinema names, the Conv3d patch kernel [D, C, 1, p, p]
/// is read as the 2D one, and `y_embedder.y_embedding` becomes the null caption.
public enum STDiTCheckpoint {
    /// The tensor Kinema's parameter `name` reads from an Open-Sora state dict, through `tensor` (nil when absent).
    static func openSoraTensor(_ name: String, dim: Int, backend: any Backend,
                               _ tensor: (String) throws -> Tensor?) throws -> Tensor? {
        if let value = try tensor(name) { return value }
        let parts = name.split(separator: ".").map(String.init)
        guard parts.count >= 3 else { return nil }
        let (prefix, layer, kind) = (parts.dropLast(2).joined(separator: "."), parts[parts.count - 2], parts.last!)
        func rows(_ packed: String, _ index: Int) throws -> Tensor? {
            try tensor("\(prefix).\(packed).\(kind)").map { backend.narrow($0, axis: 0, start: index * dim, length: dim) }
        }
        switch layer {
        case "q", "k", "v": return try rows("qkv", ["q", "k", "v"].firstIndex(of: layer)!)
        case "k_linear": return try rows("kv_linear", 0)
        case "v_linear": return try rows("kv_linear", 1)
        default: return nil
        }
    }

    /// Whether a safetensors file holds an Open-Sora STDiT state dict (names under `prefix`).
    public static func isOpenSoraSTDiT(_ file: SafetensorsFile, prefix: String = "") -> Bool {
        file.contains(prefix + "blocks.0.attn_temp.qkv.weight") && file.contains(prefix + "x_embedder.proj.weight")
    }

    /// The config an Open-Sora state dict's shapes imply (Open-Sora keeps its config in Python): width, depth,
    /// patch, channels, caption width and MLP width from the tensors; the heads (not in any shape) given, else the
    /// DiT paper's for the width (STDiT-XL/2: 16 of 72); `spaceScale` is its space_scale (0.5 for the 256 px 1.0
    /// release).
    public static func inferConfig(_ file: SafetensorsFile, prefix: String = "", numHeads: Int? = nil,
                                   spaceScale: Double = 1) throws -> PixArtConfig {
        func shape(_ name: String) throws -> [Int] {
            guard file.contains(prefix + name) else {
                throw ModelError.badCheckpoint(path: file.url.path, reason: "no tensor '\(prefix + name)': not an "
                                               + "Open-Sora STDiT state dict")
            }
            return try file.info(prefix + name).shape
        }
        let patch = try shape("x_embedder.proj.weight"), caption = try shape("y_embedder.y_proj.fc1.weight")
        let output = try shape("final_layer.linear.weight"), mlp = try shape("blocks.0.mlp.fc1.weight")
        guard patch.count == 5, patch[2] == 1, patch[3] == patch[4] else {
            throw ModelError.badCheckpoint(path: file.url.path, reason: "x_embedder.proj.weight \(patch) is not a "
                                           + "one-frame square Conv3d kernel [D, C, 1, p, p]")
        }
        let (hidden, p) = (patch[0], patch[3])
        let depth = (0...).prefix { file.contains(prefix + "blocks.\($0).scale_shift_table") }.count
        let heads = try DiTConfig.heads(given: numHeads, hidden: hidden, path: file.url.path)
        let config = PixArtConfig(sampleSize: p, patchSize: p, inChannels: patch[1], outChannels: output[0] / (p * p),
                                  hiddenSize: hidden, depth: depth, numHeads: heads, captionChannels: caption[1],
                                  mlpHidden: mlp[0], interpolationScale: spaceScale)
        try config.validate()
        return config
    }

    /// An STDiT with weights from an Open-Sora state dict `path`, its names under `prefix`; the config inferred
    /// from the tensors when not given.
    public static func load(_ path: String, prefix: String = "", config: PixArtConfig? = nil, numHeads: Int? = nil,
                            spaceScale: Double = 1, timeScale: Double = 1, backend: any Backend, dtype: DType = .f32,
                            keepsMaster: Bool = true) throws -> STDiT {
        let file = try SafetensorsFile(url: URL(fileURLWithPath: path))
        let config = try config ?? inferConfig(file, prefix: prefix, numHeads: numHeads, spaceScale: spaceScale)
        let model = try STDiT(config: config, timeScale: timeScale, backend: backend, dtype: dtype,
                              keepsMaster: keepsMaster)
        let patchKernel = prefix + "x_embedder.proj.weight"
        try model.loadParameters(from: path) { name in
            try openSoraTensor(name, dim: config.hiddenSize, backend: backend) { name in
                let key = prefix + name
                guard file.contains(key) else { return nil }
                let value = try file.tensor(key, on: backend)
                if key == patchKernel && value.rank == 5 {
                    guard value.shape[2] == 1 else {
                        throw ModelError.badCheckpoint(path: path, reason: "\(key) \(value.shape): only one-frame "
                                                       + "patches (1, p, p) are supported")
                    }
                    return value.reshaped([value.shape[0], value.shape[1], value.shape[3], value.shape[4]])
                }
                return value
            }
        }
        if file.contains(prefix + "y_embedder.y_embedding") {
            model.nullCaption = try file.tensor(prefix + "y_embedder.y_embedding", on: backend)
        }
        return model
    }
}
