import Foundation
import KinemaNN
import KinemaTensor

/// Latte's text-to-video transformer (diffusers `LatteTransformer3DModel`, parameter names included): PixArt's
/// embedders, blocks and output layer on each frame, with a temporal block after every spatial one.
///   frames [B·F, N, D] = pos_embed(x per frame) + 2D sin-cos;  e, t₆ = adaln_single(t)
///   for each layer: spatial block (self-attention over a frame's N tokens, cross-attention to the captions)
///                   → transpose to [B·N, F, D] (+ 1D sin-cos over frames before the first temporal block)
///                   → temporal block (self-attention over the F frames of one patch; no cross-attention)
///                   → transpose back
///   final layer (modulated by e), unpatchify per frame → [B, C_out, F, H, W]
/// Every block of a video reads the same t₆ (repeated per frame or per patch) and the same captions (their keys
/// and values computed once per video, then repeated per frame); the gradients of the copies are summed back.
public final class Latte {
    public struct Cache {
        let batch, frames: Int
        let stem: AdaLNSingleStem.Cache
        let spatial: [AdaLNSingleBlock.Cache], temporal: [AdaLNSingleBlock.Cache]
        let final: AdaLNSingleFinalLayer.Cache
    }

    public let config: PixArtConfig
    /// diffusers' `video_length`: the frame count it was built for (the temporal positions extend to any other).
    public let videoLength: Int
    public let backend: any Backend
    public let dtype: DType
    let stem: AdaLNSingleStem
    let spatialBlocks: [AdaLNSingleBlock]
    let temporalBlocks: [AdaLNSingleBlock]
    let temporalPositions: TemporalPositions
    public let arena: ParameterArena

    public init(config: PixArtConfig, videoLength: Int, backend: any Backend, dtype: DType = .f32, seed: UInt64 = 0,
                keepsMaster: Bool = true) throws {
        try config.validate()
        guard videoLength > 0 else { throw ModelError.invalidConfig("Latte: video length \(videoLength) is not positive") }
        self.config = config
        self.videoLength = videoLength
        self.backend = backend
        self.dtype = dtype
        let layerDType: DType = dtype == .f64 ? .f64 : .f32
        stem = AdaLNSingleStem(config: config, backend: backend, dtype: dtype, layerDType: layerDType, seed: seed)
        spatialBlocks = (0..<config.depth).map {
            AdaLNSingleBlock(backend: backend, name: "transformer_blocks.\($0)", config: config, crossAttention: true,
                             dtype: layerDType, seed: seed)
        }
        temporalBlocks = (0..<config.depth).map {
            AdaLNSingleBlock(backend: backend, name: "temporal_transformer_blocks.\($0)", config: config,
                             crossAttention: false, dtype: layerDType, seed: seed)
        }
        temporalPositions = TemporalPositions(backend: backend, dim: config.hiddenSize, dtype: dtype)
        arena = stem.makeArena(blocks: spatialBlocks + temporalBlocks, dtype: dtype, keepsMaster: keepsMaster)
    }

    public var parameters: [Parameter] { arena.parameters }

    /// x [B, C, F, H, W] (H, W multiples of the patch), timesteps [B], caption states [B, L, captionChannels] and
    /// their mask (i32 [B, L] or nil) → [B, outChannels, F, H, W] in x's dtype.
    public func forward(_ x: Tensor, timesteps: Tensor, captions captionInput: Tensor,
                        captionMask: Tensor?) -> (Tensor, Cache) {
        let p = config.patchSize
        precondition(x.rank == 5 && x.shape[1] == config.inChannels && x.shape[3] % p == 0 && x.shape[4] % p == 0,
                     "Latte expects [B, \(config.inChannels), F, H, W] with H, W multiples of \(p), got \(x.shape)")
        let (batch, frames) = (x.shape[0], x.shape[2])
        let patchesPerFrame = (x.shape[3] / p) * (x.shape[4] / p)
        stem.checkConditions("Latte", batch: batch, timesteps: timesteps, captions: captionInput)
        let perFrame = stem.frames(compute(x))
        let (tokens, embedded, t6, captions, stemCache) = stem.embed(perFrame, timesteps: timesteps,
                                                                     captions: compute(captionInput))
        let frameT6 = Repeats.interleave(t6, times: frames, backend: backend)
        let patchT6 = Repeats.interleave(t6, times: patchesPerFrame, backend: backend)
        var stream = ResidualStream(tokens)
        var spatialCaches: [AdaLNSingleBlock.Cache] = [], temporalCaches: [AdaLNSingleBlock.Cache] = []
        for (index, (spatial, temporal)) in zip(spatialBlocks, temporalBlocks).enumerated() {
            let (afterSpatial, spatialCache) = spatial.forward(stream, t6: frameT6, captions: captions,
                                                               captionMask: captionMask, captionRepeats: frames)
            var sequences = regroup(afterSpatial.value(backend), batch: batch, frames, patchesPerFrame,
                                    backend: backend)
            if index == 0 && frames > 1 { sequences = temporalPositions.add(to: sequences) }
            let (afterTemporal, temporalCache) = temporal.forward(ResidualStream(sequences), t6: patchT6)
            stream = ResidualStream(regroup(afterTemporal.value(backend), batch: batch, patchesPerFrame, frames,
                                            backend: backend))
            spatialCaches.append(spatialCache)
            temporalCaches.append(temporalCache)
        }
        let (images, finalCache) = stem.output(stream, embedded: Repeats.interleave(embedded, times: frames,
                                                                                    backend: backend), stemCache)
        let out = stem.videos(images, batch: batch)
        let cache = Cache(batch: batch, frames: frames, stem: stemCache, spatial: spatialCaches,
                          temporal: temporalCaches, final: finalCache)
        return (out.dtype == x.dtype ? out : backend.cast(out, to: x.dtype), cache)
    }

    /// Accumulates every parameter's gradient for the output gradient dOut [B, outChannels, F, H, W].
    public func backward(_ dOut: Tensor, _ cache: Cache) {
        let (batch, frames) = (cache.batch, cache.frames)
        let patchesPerFrame = cache.stem.gridHeight * cache.stem.gridWidth
        let dImages = stem.frames(compute(dOut))
        let (dStream, dFrameEmbedded) = stem.outputBackward(dImages, cache.final)
        var dx = dStream
        var dFrameT6: Tensor?, dPatchT6: Tensor?, dCaptions: Tensor?
        func accumulate(_ total: inout Tensor?, _ part: Tensor) { total = total.map { backend.add($0, part) } ?? part }
        for index in (0..<config.depth).reversed() {
            let dSequences = regroup(dx, batch: batch, frames, patchesPerFrame, backend: backend)
            let (dTemporalIn, dt6Temporal, _) = temporalBlocks[index].backward(dSequences, cache.temporal[index])
            accumulate(&dPatchT6, dt6Temporal)
            let dSpatialOut = regroup(dTemporalIn, batch: batch, patchesPerFrame, frames, backend: backend)
            let (dSpatialIn, dt6Spatial, dBlockCaptions) = spatialBlocks[index].backward(dSpatialOut,
                                                                                          cache.spatial[index])
            accumulate(&dFrameT6, dt6Spatial)
            accumulate(&dCaptions, dBlockCaptions!)
            dx = dSpatialIn
        }
        let dt6 = backend.add(Repeats.sumInterleaved(dFrameT6!, times: frames, backend: backend),
                              Repeats.sumInterleaved(dPatchT6!, times: patchesPerFrame, backend: backend))
        stem.embedBackward(dTokens: dx, dEmbedded: Repeats.sumInterleaved(dFrameEmbedded, times: frames, backend: backend),
                           dt6: dt6, dCaptions: dCaptions!, cache.stem)
    }

    public func zeroGradients() { arena.zeroGradients() }

    /// Loads every parameter by name (full precision into the master, then the compute copy).
    public func loadParameters(from source: String, _ lookup: (String) throws -> Tensor?) throws {
        try arena.loadParameters(from: source, expected: "a Latte of the same configuration", lookup)
    }

    public func stateDict() -> [(name: String, tensor: Tensor)] {
        parameters.map { ($0.name, $0.weights) }
    }

    private func compute(_ x: Tensor) -> Tensor { x.dtype == dtype ? x : backend.cast(x, to: dtype) }
}

/// Loads a diffusers `LatteTransformer3DModel` folder (config.json + diffusion_pytorch_model.safetensors).
public enum LatteCheckpoint {
    public static func load(folder: String, backend: any Backend, dtype: DType = .f32,
                            keepsMaster: Bool = true) throws -> Latte {
        let (config, json, file, weightsPath) = try PixArtCheckpoint.readDiffusersFolder(
            folder, className: "LatteTransformer3DModel")
        guard let videoLength = (json["video_length"] as? NSNumber)?.intValue else {
            throw ModelError.badCheckpoint(path: URL(fileURLWithPath: folder).appendingPathComponent("config.json").path,
                                           reason: "config.json lacks integer 'video_length'")
        }
        let model = try Latte(config: config, videoLength: videoLength, backend: backend, dtype: dtype,
                              keepsMaster: keepsMaster)
        try model.arena.loadParameters(from: weightsPath, expected: "a LatteTransformer3DModel of the same "
                                       + "configuration") { name in
            file.contains(name) ? try file.tensor(name, on: backend) : nil
        }
        return model
    }
}
