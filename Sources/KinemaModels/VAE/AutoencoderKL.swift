import Foundation
import KinemaNN
import KinemaTensor

/// The shape of diffusers' `AutoencoderKL` (the SD-VAE: block_out_channels 128/256/512/512, 2 resnets a block,
/// 32 groups, 4 latent channels, scaling factor 0.18215).
public struct AutoencoderKLConfig: Equatable, Sendable {
    public var inChannels, outChannels, latentChannels: Int
    public var blockOutChannels: [Int]
    public var layersPerBlock, normGroups: Int
    public var scalingFactor: Double
    public var useQuantConv, usePostQuantConv, midBlockAttention: Bool
    /// diffusers' `sample_size`: the side of a tile in tiled decoding (its latent tiles are this / downsampling).
    public var sampleSize: Int

    public init(inChannels: Int = 3, outChannels: Int = 3, latentChannels: Int = 4,
                blockOutChannels: [Int] = [128, 256, 512, 512], layersPerBlock: Int = 2, normGroups: Int = 32,
                scalingFactor: Double = 0.18215, useQuantConv: Bool = true, usePostQuantConv: Bool = true,
                midBlockAttention: Bool = true, sampleSize: Int = 512) {
        (self.inChannels, self.outChannels, self.latentChannels) = (inChannels, outChannels, latentChannels)
        (self.blockOutChannels, self.layersPerBlock, self.normGroups) = (blockOutChannels, layersPerBlock, normGroups)
        (self.scalingFactor, self.useQuantConv, self.usePostQuantConv) = (scalingFactor, useQuantConv, usePostQuantConv)
        self.midBlockAttention = midBlockAttention
        self.sampleSize = sampleSize
    }

    /// From diffusers' config.json: only the SD-VAE's down/up block types and SiLU are supported.
    public init(json: [String: Any], path: String) throws {
        func bad(_ reason: String) -> ModelError { .badCheckpoint(path: path, reason: reason) }
        guard let channels = json["block_out_channels"] as? [Int], !channels.isEmpty else {
            throw bad("config.json lacks block_out_channels")
        }
        for (key, expected) in [("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")] {
            if let types = json[key] as? [String], types.contains(where: { $0 != expected }) {
                throw bad("\(key) \(types) is not supported (only \(expected))")
            }
        }
        if let act = json["act_fn"] as? String, act != "silu" { throw bad("act_fn '\(act)' is not supported (only silu)") }
        if json["shift_factor"] as? NSNumber != nil { throw bad("shift_factor is not supported (SD-VAE layout only)") }
        self.init(inChannels: json["in_channels"] as? Int ?? 3, outChannels: json["out_channels"] as? Int ?? 3,
                  latentChannels: json["latent_channels"] as? Int ?? 4, blockOutChannels: channels,
                  layersPerBlock: json["layers_per_block"] as? Int ?? 1, normGroups: json["norm_num_groups"] as? Int ?? 32,
                  scalingFactor: (json["scaling_factor"] as? NSNumber)?.doubleValue ?? 0.18215,
                  useQuantConv: json["use_quant_conv"] as? Bool ?? true,
                  usePostQuantConv: json["use_post_quant_conv"] as? Bool ?? true,
                  midBlockAttention: json["mid_block_add_attention"] as? Bool ?? true,
                  sampleSize: (json["sample_size"] as? NSNumber)?.intValue ?? 512)
        guard blockOutChannels.allSatisfy({ $0 % normGroups == 0 }), layersPerBlock > 0 else {
            throw bad("every block's channels must be divisible by \(normGroups) groups")
        }
    }

    /// How much smaller the latents are than the images.
    public var downsampling: Int { 1 << (blockOutChannels.count - 1) }
}

/// diffusers' `AutoencoderKL`, frozen (forward only), parameter names included. Images [B, C, H, W] in [-1, 1]
/// encode to the mean and log-variance of the latent Gaussian [B, 4, H/f, W/f]; latents decode back. A video
/// runs frame by frame (`encodeFrames`, `decodeFrames`), in groups of `framesPerCall` so long or large clips fit.
public final class AutoencoderKL {
    public let config: AutoencoderKLConfig
    public let backend: any Backend
    public let dtype: DType
    let encoder: Coder, decoder: Coder
    let quantConv, postQuantConv: Conv2d?
    public let arena: ParameterArena
    /// The folder it was loaded from (nil for a model made in code).
    public internal(set) var folder: String?

    public init(config: AutoencoderKLConfig, backend: any Backend, dtype: DType = .f32, seed: UInt64 = 0) {
        self.config = config
        self.backend = backend
        self.dtype = dtype
        let layerDType: DType = dtype == .f64 ? .f64 : .f32
        encoder = Coder(encoding: true, config: config, backend: backend, dtype: layerDType, seed: seed)
        decoder = Coder(encoding: false, config: config, backend: backend, dtype: layerDType, seed: seed)
        let latent = config.latentChannels
        quantConv = config.useQuantConv ? Conv2d(backend: backend, name: "quant_conv", inChannels: 2 * latent,
                                                 outChannels: 2 * latent, kernelSize: 1, dtype: layerDType) : nil
        postQuantConv = config.usePostQuantConv ? Conv2d(backend: backend, name: "post_quant_conv", inChannels: latent,
                                                         outChannels: latent, kernelSize: 1, dtype: layerDType) : nil
        let layers: [Layer] = [encoder, decoder] + [quantConv, postQuantConv].compactMap { $0 }
        arena = ParameterArena(parameters: layers.flatMap(\.parameters), computeDType: dtype, backend: backend,
                               keepsMaster: false, packedRuns: KinemaNN.packedRuns(of: layers))
    }

    public var parameters: [Parameter] { arena.parameters }

    /// Loads every parameter by name (see `ParameterArena.loadParameters`).
    public func loadParameters(from source: String, _ lookup: (String) throws -> Tensor?) throws {
        try arena.loadParameters(from: source, expected: "an AutoencoderKL of this config.json", lookup)
    }

    /// Images [B, C, H, W] (H, W multiples of the downsampling) → latent mean and log-variance [B, 4, H/f, W/f].
    public func encode(_ images: Tensor) -> (mean: Tensor, logVariance: Tensor) {
        let f = config.downsampling
        precondition(images.rank == 4 && images.shape[1] == config.inChannels && images.shape[2] % f == 0
                     && images.shape[3] % f == 0,
                     "AutoencoderKL.encode expects [B, \(config.inChannels), H, W] with H, W multiples of \(f), got \(images.shape)")
        var moments = encoder.forward(compute(images))
        if let quantConv { moments = quantConv.forward(moments) }
        let halves = backend.chunk(moments, parts: 2, axis: 1)
        return (halves[0], backend.clamp(halves[1], min: -30, max: 20))  // diffusers' DiagonalGaussianDistribution
    }

    /// Decode latents larger than a tile in overlapping tiles (diffusers' `enable_tiling`): the memory of one tile,
    /// whatever the image size.
    public var tiling = false

    /// Latents [B, 4, h, w] (unscaled: divide by `scalingFactor` first) → images [B, C, h·f, w·f].
    public func decode(_ latents: Tensor) -> Tensor {
        precondition(latents.rank == 4 && latents.shape[1] == config.latentChannels,
                     "AutoencoderKL.decode expects [B, \(config.latentChannels), h, w], got \(latents.shape)")
        let tile = config.sampleSize / config.downsampling
        if tiling && (latents.shape[2] > tile || latents.shape[3] > tile) { return decodeTiled(latents) }
        var z = compute(latents)
        if let postQuantConv { z = postQuantConv.forward(z) }
        return decoder.forward(z)
    }

    /// diffusers' `tiled_decode`: latent tiles of sampleSize/f with a quarter overlap, each decoded alone; every
    /// tile's top and left edges (a quarter of a decoded tile) blended linearly with the tile above and the one to
    /// its left (already blended), then each cut to its first 3/4 and the pieces joined — all on the device, the
    /// blending in f32 (as diffusers' fp32 tiles; a bf16 blend adds a rounding the whole-VAE check measured).
    func decodeTiled(_ latents: Tensor) -> Tensor {
        let tile = config.sampleSize / config.downsampling
        let step = Int(Double(tile) * 0.75), extent = Int(Double(config.sampleSize) * 0.25)
        let limit = config.sampleSize - extent
        let (height, width) = (latents.shape[2], latents.shape[3])
        var rows: [[Tensor]] = []
        for top in stride(from: 0, to: height, by: step) {
            var row: [Tensor] = []
            for left in stride(from: 0, to: width, by: step) {
                let part = backend.narrow(backend.narrow(latents, axis: 2, start: top, length: min(tile, height - top)),
                                          axis: 3, start: left, length: min(tile, width - left))
                var z = compute(part)
                if let postQuantConv { z = postQuantConv.forward(z) }
                var decoded = decoder.forward(z)
                if decoded.dtype != .f64 { decoded = backend.cast(decoded, to: .f32) }
                if let above = rows.last?[row.count] { decoded = blend(above, into: decoded, extent: extent, axis: 2) }
                if let previous = row.last { decoded = blend(previous, into: decoded, extent: extent, axis: 3) }
                row.append(decoded)
            }
            rows.append(row)
        }
        // Join the cut tiles: each keeps at most `limit` rows and columns.
        func cut(_ x: Tensor, _ axis: Int) -> Tensor { backend.narrow(x, axis: axis, start: 0, length: min(limit, x.shape[axis])) }
        let joined = backend.concat(rows.map { row in backend.concat(row.map { cut(cut($0, 2), 3) }, axis: 3) }, axis: 2)
        return joined.dtype == dtype ? joined : backend.cast(joined, to: dtype)
    }

    /// diffusers' blend_v (axis 2) / blend_h (axis 3): the first `extent` rows (columns) of `tile` fade from
    /// `other`'s last ones, weight k/extent on the tile's own. The blended axis goes first for one row-wise axpby.
    private func blend(_ other: Tensor, into tile: Tensor, extent requested: Int, axis: Int) -> Tensor {
        let extent = min(requested, other.shape[axis], tile.shape[axis])
        guard extent > 0 else { return tile }
        let (order, inverse) = axis == 2 ? ([2, 0, 1, 3], [1, 2, 0, 3]) : ([3, 0, 1, 2], [1, 2, 3, 0])
        let mine = backend.permute(backend.narrow(tile, axis: axis, start: 0, length: extent), order)
        let theirs = backend.permute(backend.narrow(other, axis: axis, start: other.shape[axis] - extent, length: extent),
                                     order)
        let weights = (0..<extent).map { Double($0) / Double(extent) }
        let blended = backend.permute(backend.rowwiseAxpby(weights.map { 1 - $0 }, theirs, weights, mine), inverse)
        guard extent < tile.shape[axis] else { return blended }
        return backend.concat([blended, backend.narrow(tile, axis: axis, start: extent, length: tile.shape[axis] - extent)],
                              axis: axis)
    }

    /// Frames [N, C, H, W] (a video's frames, any count) encoded `framesPerCall` at a time: the latent means
    /// [N, 4, h, w], concatenated. Bounds the memory of long clips.
    public func encodeFrames(_ frames: Tensor, framesPerCall: Int = 8) -> Tensor {
        perGroup(frames, framesPerCall) { encode($0).mean }
    }

    /// Latents [N, 4, h, w] decoded `framesPerCall` at a time.
    public func decodeFrames(_ latents: Tensor, framesPerCall: Int = 8) -> Tensor {
        perGroup(latents, framesPerCall) { decode($0) }
    }

    /// Clips [B, C, F, H, W] in [-1, 1] → scaled latents [B, 4, F, H/f, W/f] (the latent means × the scaling
    /// factor: what a latent video model trains on), `framesPerCall` frames at a time.
    public func encodeVideo(_ clips: Tensor, framesPerCall: Int = 8) -> Tensor {
        let (b, c, f, h, w) = (clips.shape[0], clips.shape[1], clips.shape[2], clips.shape[3], clips.shape[4])
        let frames = backend.permute(clips, [0, 2, 1, 3, 4]).reshaped([b * f, c, h, w])
        let means = encodeFrames(frames, framesPerCall: framesPerCall)
        let scaled = backend.affine(means, scale: config.scalingFactor, shift: 0)
        return backend.permute(scaled.reshaped([b, f] + Array(scaled.shape.dropFirst())), [0, 2, 1, 3, 4])
    }

    /// Scaled latents [B, 4, F, h, w] → clips [B, C, F, h·f, w·f].
    public func decodeVideo(_ latents: Tensor, framesPerCall: Int = 8) -> Tensor {
        let (b, c, f, h, w) = (latents.shape[0], latents.shape[1], latents.shape[2], latents.shape[3], latents.shape[4])
        let frames = backend.affine(backend.permute(latents, [0, 2, 1, 3, 4]).reshaped([b * f, c, h, w]),
                                    scale: 1 / config.scalingFactor, shift: 0)
        let images = decodeFrames(frames, framesPerCall: framesPerCall)
        return backend.permute(images.reshaped([b, f] + Array(images.shape.dropFirst())), [0, 2, 1, 3, 4])
    }

    private func perGroup(_ x: Tensor, _ size: Int, _ body: (Tensor) -> Tensor) -> Tensor {
        precondition(size > 0, "frames per call must be positive")
        let parts = stride(from: 0, to: x.shape[0], by: size).map {
            body(backend.narrow(x, axis: 0, start: $0, length: min(size, x.shape[0] - $0)))
        }
        return parts.count == 1 ? parts[0] : backend.concat(parts, axis: 0)
    }

    private func compute(_ x: Tensor) -> Tensor { x.dtype == dtype ? x : backend.cast(x, to: dtype) }
}

/// diffusers' ResnetBlock2D: GroupNorm → SiLU → conv → GroupNorm → SiLU → conv, plus the input (through a 1×1
/// conv_shortcut when the channel count changes).
final class ResnetBlock: Layer {
    let norm1, norm2: GroupNorm
    let conv1, conv2: Conv2d
    let shortcut: Conv2d?
    let backend: any Backend

    init(backend: any Backend, name: String, inChannels: Int, outChannels: Int, groups: Int, dtype: DType, seed: UInt64) {
        self.backend = backend
        norm1 = GroupNorm(backend: backend, name: "\(name).norm1", channels: inChannels, groups: groups, dtype: dtype)
        conv1 = Conv2d(backend: backend, name: "\(name).conv1", inChannels: inChannels, outChannels: outChannels,
                       kernelSize: 3, dtype: dtype, seed: seed)
        norm2 = GroupNorm(backend: backend, name: "\(name).norm2", channels: outChannels, groups: groups, dtype: dtype)
        conv2 = Conv2d(backend: backend, name: "\(name).conv2", inChannels: outChannels, outChannels: outChannels,
                       kernelSize: 3, dtype: dtype, seed: seed)
        shortcut = inChannels == outChannels ? nil
            : Conv2d(backend: backend, name: "\(name).conv_shortcut", inChannels: inChannels, outChannels: outChannels,
                     kernelSize: 1, dtype: dtype, seed: seed)
    }

    var parameters: [Parameter] {
        norm1.parameters + conv1.parameters + norm2.parameters + conv2.parameters + (shortcut?.parameters ?? [])
    }

    func forward(_ x: Tensor) -> Tensor {
        let h = conv1.forward(backend.silu(norm1.forward(x)))
        let out = conv2.forward(backend.silu(norm2.forward(h)))
        return backend.add(shortcut?.forward(x) ?? x, out)
    }
}

/// The mid-block attention: one head over the H·W positions, GroupNorm first, residual after (diffusers'
/// `Attention` with to_q … to_out.0).
final class SpatialAttention: Layer {
    let norm: GroupNorm
    let attention: MultiHeadAttention
    let backend: any Backend

    init(backend: any Backend, name: String, channels: Int, groups: Int, dtype: DType, seed: UInt64) {
        self.backend = backend
        norm = GroupNorm(backend: backend, name: "\(name).group_norm", channels: channels, groups: groups, dtype: dtype)
        attention = MultiHeadAttention(backend: backend, name: name, dim: channels, heads: 1, bias: true, dtype: dtype,
                                       seed: seed)
    }

    var parameters: [Parameter] { norm.parameters + attention.parameters }
    var packedRuns: [Range<Int>] { attention.packedRuns.map { ($0.lowerBound + 2)..<($0.upperBound + 2) } }

    func forward(_ x: Tensor) -> Tensor {
        let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let tokens = backend.permute(norm.forward(x).reshaped([batch, channels, height * width]), [0, 2, 1])
        let attended = attention.forward(tokens).0
        let back = backend.permute(attended, [0, 2, 1]).reshaped(x.shape)
        return backend.add(x, back)
    }
}

/// The encoder or the decoder of the SD-VAE, with diffusers' names (`encoder.…` / `decoder.…`).
final class Coder: Layer {
    let encoding: Bool
    let convIn, convOut: Conv2d
    /// Per level: the resnets, then the resampler (a stride-2 conv down, or nearest ×2 then a conv up).
    let levels: [(resnets: [ResnetBlock], resampler: Conv2d?)]
    let midResnets: [ResnetBlock]
    let midAttention: SpatialAttention?
    let normOut: GroupNorm
    let backend: any Backend

    init(encoding: Bool, config: AutoencoderKLConfig, backend: any Backend, dtype: DType, seed: UInt64) {
        self.encoding = encoding
        self.backend = backend
        let root = encoding ? "encoder" : "decoder", groups = config.normGroups
        let channels = encoding ? config.blockOutChannels : Array(config.blockOutChannels.reversed())
        let outer = encoding ? config.inChannels : config.latentChannels
        convIn = Conv2d(backend: backend, name: "\(root).conv_in", inChannels: outer, outChannels: channels[0],
                        kernelSize: 3, dtype: dtype, seed: seed)
        var levels: [(resnets: [ResnetBlock], resampler: Conv2d?)] = []
        var previous = channels[0]
        for (level, width) in channels.enumerated() {
            let block = "\(root).\(encoding ? "down_blocks" : "up_blocks").\(level)"
            let count = encoding ? config.layersPerBlock : config.layersPerBlock + 1
            let resnets = (0..<count).map { index -> ResnetBlock in
                let block = ResnetBlock(backend: backend, name: "\(block).resnets.\(index)",
                                        inChannels: index == 0 ? previous : width, outChannels: width, groups: groups,
                                        dtype: dtype, seed: seed)
                return block
            }
            previous = width
            let last = level == channels.count - 1
            let resampler = last ? nil : encoding
                ? Conv2d(backend: backend, name: "\(block).downsamplers.0.conv", inChannels: width, outChannels: width,
                         kernelSize: 3, stride: 2, padding: (0, 0, 1, 1), dtype: dtype, seed: seed)
                : Conv2d(backend: backend, name: "\(block).upsamplers.0.conv", inChannels: width, outChannels: width,
                         kernelSize: 3, dtype: dtype, seed: seed)
            levels.append((resnets, resampler))
        }
        self.levels = levels
        let middle = config.blockOutChannels.last!
        midResnets = (0..<2).map {
            ResnetBlock(backend: backend, name: "\(root).mid_block.resnets.\($0)", inChannels: middle,
                        outChannels: middle, groups: groups, dtype: dtype, seed: seed)
        }
        midAttention = config.midBlockAttention
            ? SpatialAttention(backend: backend, name: "\(root).mid_block.attentions.0", channels: middle,
                               groups: groups, dtype: dtype, seed: seed) : nil
        let last = channels.last!
        normOut = GroupNorm(backend: backend, name: "\(root).conv_norm_out", channels: last, groups: groups, dtype: dtype)
        convOut = Conv2d(backend: backend, name: "\(root).conv_out", inChannels: last,
                         outChannels: encoding ? 2 * config.latentChannels : config.outChannels, kernelSize: 3,
                         dtype: dtype, seed: seed)
    }

    /// In forward order of diffusers' module registration (the arena's order; loading is by name).
    private var layers: [Layer] {
        var layers: [Layer] = [convIn]
        for level in levels { layers += level.resnets as [Layer] + [level.resampler].compactMap { $0 } }
        layers += [midAttention].compactMap { $0 } as [Layer]
        layers += midResnets as [Layer]
        return layers + [normOut, convOut]
    }

    var parameters: [Parameter] { layers.flatMap(\.parameters) }
    var packedRuns: [Range<Int>] { KinemaNN.packedRuns(of: layers) }

    func forward(_ x: Tensor) -> Tensor {
        var h = convIn.forward(x)
        func middle() {
            h = midResnets[0].forward(h)
            if let midAttention { h = midAttention.forward(h) }
            h = midResnets[1].forward(h)
        }
        if !encoding { middle() }
        for level in levels {
            for resnet in level.resnets { h = resnet.forward(h) }
            if let resampler = level.resampler { h = resampler.forward(encoding ? h : upsampleNearest(h)) }
        }
        if encoding { middle() }
        return convOut.forward(backend.silu(normOut.forward(h)))
    }

    /// Nearest-neighbour ×2: every pixel repeated along both axes (two concatenations).
    private func upsampleNearest(_ x: Tensor) -> Tensor {
        let (b, c, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let columns = x.reshaped([b, c, height, width, 1])
        let wide = backend.concat([columns, columns], axis: 4).reshaped([b, c, height, 1, 2 * width])
        return backend.concat([wide, wide], axis: 3).reshaped([b, c, 2 * height, 2 * width])
    }
}

/// Loads a diffusers `AutoencoderKL` folder (config.json + diffusion_pytorch_model.safetensors).
public enum AutoencoderKLCheckpoint {
    public static func load(folder: String, backend: any Backend, dtype: DType = .f32) throws -> AutoencoderKL {
        let (json, configPath, file, weightsPath) = try DiffusersFolder.open(folder,
                                                                             weights: "diffusion_pytorch_model.safetensors")
        if let name = json["_class_name"] as? String, name != "AutoencoderKL" {
            throw ModelError.badCheckpoint(path: configPath, reason: "a \(name), not an AutoencoderKL")
        }
        let config = try AutoencoderKLConfig(json: json, path: configPath)
        let model = AutoencoderKL(config: config, backend: backend, dtype: dtype)
        try model.loadParameters(from: weightsPath) { name in
            file.contains(name) ? try file.tensor(name, on: backend) : nil
        }
        model.folder = folder
        return model
    }
}
