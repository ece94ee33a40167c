import Foundation
import KinemaNN
import KinemaTensor

/// A video DiT (OpenDiT's vDiT, with its parameter names): 3D patches (Conv3d pt × p × p), one sequence of every
/// frame's patches with full self-attention, DiT's adaLN-zero blocks and final layer, and the text conditioning
/// `VideoDiTConfig.conditioning` chooses. Positions: the 2D sin-cos of a patch's place in its frame plus the 1D
/// sin-cos of its frame, for any (T, H, W).
///   tokens = x_embedder(x) + positions;  c = t_embedder(t) [+ y_embedder.output_projection(pooled captions)]
///   blocks (adaLN-zero from SiLU(c); + cross-attention, or caption tokens in front, by the conditioning)
///   final_layer (adaLN from SiLU(c)), unpatchify3D → [B, C_out, T, H, W]
public final class VideoDiT {
    public struct Cache {
        let batch, captionTokens: Int
        let patchEmbed: PatchEmbed.Cache
        let timestep: TimestepEmbedder.Cache
        let captionInput: Tensor  // what the caption projection read: pooled [B, C_text] or tokens [B, L, C_text]
        let conditioning, activated: Tensor
        let blocks: [DiTBlock.Cache]
        let finalLayer: DiTFinalLayer.Cache
    }

    public let config: VideoDiTConfig
    public let backend: any Backend
    public let dtype: DType
    let xEmbedder: PatchEmbed
    let tEmbedder: TimestepEmbedder
    let captionProjection: Linear
    let blocks: [DiTBlock]
    let finalLayer: DiTFinalLayer
    /// Every block's adaLN and the final layer's as one product (all read SiLU(c)), as in DiT.
    let modulation: LinearStack
    private var positionTables: [[Int]: Tensor] = [:]
    public let arena: ParameterArena

    public init(config: VideoDiTConfig, backend: any Backend, dtype: DType = .f32, seed: UInt64 = 0,
                keepsMaster: Bool = true) throws {
        try config.validate()
        self.config = config
        self.backend = backend
        self.dtype = dtype
        let d = config.hiddenSize, layerDType: DType = dtype == .f64 ? .f64 : .f32, blockConfig = config.blockConfig
        xEmbedder = PatchEmbed(backend: backend, name: "x_embedder", patchSize: config.patchSize,
                               temporalPatch: config.temporalPatch, inChannels: config.inChannels, dim: d,
                               dtype: layerDType, seed: seed)
        tEmbedder = TimestepEmbedder(backend: backend, name: "t_embedder", dim: d, frequencyShift: 0, dtype: layerDType,
                                     seed: seed)
        captionProjection = Linear(backend: backend, name: "y_embedder.output_projection",
                                   inFeatures: config.captionChannels, outFeatures: d, dtype: layerDType, seed: seed)
        blocks = (0..<config.depth).map {
            DiTBlock(backend: backend, name: "blocks.\($0)", config: blockConfig,
                     crossAttention: config.conditioning == .crossAttention, dtype: layerDType, seed: seed)
        }
        finalLayer = DiTFinalLayer(backend: backend, config: blockConfig, outFeatures: config.patchFeatures,
                                   dtype: layerDType)
        (arena, modulation) = adaLNZeroArena(embedders: xEmbedder.parameters + tEmbedder.parameters
                                                 + captionProjection.parameters,
                                             blocks: blocks, finalLayer: finalLayer, dtype: dtype, backend: backend,
                                             keepsMaster: keepsMaster)
    }

    public var parameters: [Parameter] { arena.parameters }

    /// x [B, C, T, H, W] (T, H, W multiples of the patch), timesteps [B], caption states [B, L, C_text] and their
    /// mask (i32 [B, L] or nil) → [B, C_out, T, H, W] in x's dtype.
    public func forward(_ x: Tensor, timesteps: Tensor, captions captionInput: Tensor,
                        captionMask: Tensor?) -> (Tensor, Cache) {
        let (p, pt, d) = (config.patchSize, config.temporalPatch, config.hiddenSize)
        precondition(x.rank == 5 && x.shape[1] == config.inChannels && x.shape[2] % pt == 0 && x.shape[3] % p == 0
                     && x.shape[4] % p == 0, "video DiT expects [B, \(config.inChannels), T, H, W] with T a multiple "
                     + "of \(pt) and H, W of \(p), got \(x.shape)")
        let batch = x.shape[0], grid = (t: x.shape[2] / pt, h: x.shape[3] / p, w: x.shape[4] / p)
        precondition(captionInput.rank == 3 && captionInput.shape[0] == batch
                     && captionInput.shape[2] == config.captionChannels && timesteps.shape == [batch],
                     "video DiT expects timesteps [\(batch)] and captions [\(batch), L, \(config.captionChannels)], got "
                     + "\(timesteps.shape) and \(captionInput.shape)")
        let count = grid.t * grid.h * grid.w, length = captionInput.shape[1]
        let (patches, patchCache) = xEmbedder.forward(compute(x))
        let tokens = backend.addBias(patches.reshaped([batch, count * d]), positions(grid)).reshaped([batch, count, d])
        let (timeEmbedding, timestepCache) = tEmbedder.forward(timesteps)
        let captions = compute(captionInput)
        var c = timeEmbedding, projectedInput = captions, captionTokens: Tensor?
        if config.conditioning == .adaLNZero {
            projectedInput = pooled(captions, mask: captionMask)
            c = backend.add(c, captionProjection.forward(projectedInput))
        } else {
            captionTokens = captionProjection.forward(captions)
        }
        let activated = backend.silu(c)
        let modulations = backend.chunk(modulation.forward(activated), parts: 6 * blocks.count + 2, axis: 1)
        let inContext = config.conditioning == .inContext
        var stream = ResidualStream(inContext ? backend.concat([captionTokens!, tokens], axis: 1) : tokens)
        let keyMask = inContext ? captionMask.map {
            backend.concat([$0, backend.upload([Int32](repeating: 1, count: batch * count), shape: [batch, count])], axis: 1)
        } : nil
        var blockCaches: [DiTBlock.Cache] = []
        for (index, block) in blocks.enumerated() {
            let (out, cache) = block.forward(stream, modulation: modulations[6 * index..<6 * index + 6], keyMask: keyMask,
                                             captions: inContext ? nil : captionTokens, captionMask: captionMask)
            stream = out
            blockCaches.append(cache)
        }
        if inContext { stream = ResidualStream(backend.narrow(stream.value(backend), axis: 1, start: length, length: count)) }
        let (outTokens, finalCache) = finalLayer.forward(stream, modulation: modulations.suffix(2))
        let out = Patches.unpatchify3D(outTokens, channels: config.outChannels, patchSize: p, temporalPatch: pt,
                                       grid: grid, backend: backend)
        let cache = Cache(batch: batch, captionTokens: inContext ? length : 0, patchEmbed: patchCache,
                          timestep: timestepCache, captionInput: projectedInput, conditioning: c, activated: activated,
                          blocks: blockCaches, finalLayer: finalCache)
        return (out.dtype == x.dtype ? out : backend.cast(out, to: x.dtype), cache)
    }

    /// Accumulates every parameter's gradient for the output gradient dOut [B, C_out, T, H, W].
    public func backward(_ dOut: Tensor, _ cache: Cache) {
        let dTokens = Patches.unpatchify3DBackward(compute(dOut), patchSize: config.patchSize,
                                                   temporalPatch: config.temporalPatch, backend: backend)
        var (dh, dFinalModulation) = finalLayer.backward(dTokens, cache.finalLayer)
        let length = cache.captionTokens, d = config.hiddenSize
        if length > 0 { dh = backend.concat([backend.zeros([cache.batch, length, d], dtype: dh.dtype), dh], axis: 1) }
        var dModulations: [[Tensor]] = [], dCaptionTokens: Tensor?
        for (block, blockCache) in zip(blocks, cache.blocks).reversed() {
            let (dx, dModulation, dCaptions) = block.backward(dh, blockCache)
            dh = dx
            dModulations.append(dModulation)
            if let dCaptions { dCaptionTokens = dCaptionTokens.map { backend.add($0, dCaptions) } ?? dCaptions }
        }
        if length > 0 {
            dCaptionTokens = backend.narrow(dh, axis: 1, start: 0, length: length)
            dh = backend.narrow(dh, axis: 1, start: length, length: dh.shape[1] - length)
        }
        let dModulation = backend.concat(dModulations.reversed().flatMap { $0 } + dFinalModulation, axis: 1)
        let dc = backend.siluBackward(modulation.backward(dModulation, input: cache.activated), x: cache.conditioning)
        tEmbedder.backward(dc, cache.timestep)
        captionProjection.accumulateGradients(dCaptionTokens ?? dc, input: cache.captionInput)
        xEmbedder.backward(dh, cache.patchEmbed)
    }

    public func zeroGradients() { arena.zeroGradients() }

    public func loadParameters(from source: String, _ lookup: (String) throws -> Tensor?) throws {
        try arena.loadParameters(from: source, expected: "a video DiT of the same configuration", lookup)
    }

    public func stateDict() -> [(name: String, tensor: Tensor)] { parameters.map { ($0.name, $0.weights) } }

    /// The mean of each row's unmasked caption states, [B, C_text]: adaLN-zero's pooled caption (one token, such
    /// as a CLIP pooled vector, passes through). The mask is read on the host to weight the tokens.
    func pooled(_ captions: Tensor, mask: Tensor?) -> Tensor {
        let (batch, length) = (captions.shape[0], captions.shape[1])
        let flags = mask.map { backend.download($0) } ?? [Float](repeating: 1, count: batch * length)
        var weights = [Float](repeating: 0, count: batch * length)
        for row in 0..<batch {
            let kept = flags[(row * length)..<((row + 1) * length)].filter { $0 != 0 }.count
            for j in 0..<length where flags[row * length + j] != 0 { weights[row * length + j] = 1 / Float(kept) }
        }
        let weighting = backend.upload(weights, shape: [batch, 1, length], dtype: captions.dtype)
        return backend.matmul(weighting, captions).reshaped([batch, config.captionChannels])
    }

    /// The positions of a (t, h, w) patch grid, flattened [t·h·w·D]: token (f, s) = 2D sin-cos(s) + 1D sin-cos(f).
    private func positions(_ grid: (t: Int, h: Int, w: Int)) -> Tensor {
        let key = [grid.t, grid.h, grid.w], d = config.hiddenSize
        if let table = positionTables[key] { return table }
        let spatial = PositionalEmbedding.sinCos2D(dim: d, gridHeight: grid.h, gridWidth: grid.w)
        let temporal = PositionalEmbedding.sinCos1D(dim: d, positions: (0..<grid.t).map(Double.init))
        let perFrame = grid.h * grid.w * d
        let values = (0..<(grid.t * perFrame)).map { spatial[$0 % perFrame] + temporal[($0 / perFrame) * d + $0 % d] }
        let table = backend.upload(values, shape: [values.count], dtype: dtype)
        positionTables[key] = table
        return table
    }

    private func compute(_ x: Tensor) -> Tensor { x.dtype == dtype ? x : backend.cast(x, to: dtype) }
}

/// Reads OpenDiT's vDiT state dicts (a safetensors file of its parameter names; the Conv3d patch kernel as is).
public enum VideoDiTCheckpoint {
    /// Whether a file holds a video DiT: a 5-D patch kernel and DiT's adaLN blocks (an STDiT has temporal attention).
    public static func isVideoDiT(_ file: SafetensorsFile) -> Bool {
        file.contains("blocks.0.adaLN_modulation.1.weight") && !file.contains("blocks.0.attn_temp.qkv.weight")
            && ((try? file.info("x_embedder.proj.weight").shape.count) == 5)
    }

    /// The config the tensors' shapes imply; heads (in no shape) given, else the DiT paper's for the width; the
    /// conditioning given (adaLN-zero and in-context hold the same tensors; a cross-attention one is recognised).
    public static func inferConfig(_ file: SafetensorsFile, numHeads: Int? = nil,
                                   conditioning: VideoDiTConfig.Conditioning = .adaLNZero) throws -> VideoDiTConfig {
        let patch = try file.info("x_embedder.proj.weight").shape
        let caption = try file.info("y_embedder.output_projection.weight").shape
        let output = try file.info("final_layer.linear.weight").shape, mlp = try file.info("blocks.0.mlp.fc1.weight").shape
        guard patch.count == 5, patch[3] == patch[4] else {
            throw ModelError.badCheckpoint(path: file.url.path, reason: "x_embedder.proj.weight \(patch) is not a Conv3d "
                                           + "kernel [D, C, pt, p, p]")
        }
        let (hidden, pt, p) = (patch[0], patch[2], patch[3])
        let heads = try DiTConfig.heads(given: numHeads, hidden: hidden, path: file.url.path)
        let crossAttention = file.contains("blocks.0.cross_attn.to_q.weight")
        let config = VideoDiTConfig(patchSize: p, temporalPatch: pt, inChannels: patch[1],
                                    outChannels: output[0] / (pt * p * p), hiddenSize: hidden,
                                    depth: (0...).prefix { file.contains("blocks.\($0).adaLN_modulation.1.weight") }.count,
                                    numHeads: heads, mlpRatio: Double(mlp[0]) / Double(hidden),
                                    captionChannels: caption[1],
                                    conditioning: crossAttention ? .crossAttention : conditioning)
        try config.validate()
        return config
    }

    public static func load(_ path: String, numHeads: Int? = nil, conditioning: VideoDiTConfig.Conditioning = .adaLNZero,
                            backend: any Backend, dtype: DType = .f32) throws -> VideoDiT {
        let file = try SafetensorsFile(url: URL(fileURLWithPath: path))
        let model = try VideoDiT(config: try inferConfig(file, numHeads: numHeads, conditioning: conditioning),
                                 backend: backend, dtype: dtype, keepsMaster: false)
        try model.loadParameters(from: path) { file.contains($0) ? try file.tensor($0, on: backend) : nil }
        return model
    }
}
