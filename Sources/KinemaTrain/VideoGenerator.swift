import Foundation
import KinemaData
import KinemaDiffusion
import KinemaModels
import KinemaTensor

/// Text-to-video (and image-to-video) sampling from a Latte, STDiT or video DiT: the rectified-flow Euler sampler
/// with classifier-free guidance on the caption (v = v_∅ + s·(v_c − v_∅), the empty caption as ∅, both halves in one
/// doubled batch). With first frames given, they stay clean through sampling (the conditioning of Open-Sora's
/// masks). A model trained with IDDPM samples by `diffusionMethod` (DDIM or DDPM) over `steps` respaced steps
/// instead, guiding its ε channels.
public struct VideoGenerator {
    public var model: any TextConditionedVideoModel
    public var text: TextConditioner
    public var flow: RectifiedFlow
    public var steps: Int
    public var cfgScale: Double
    /// The header of the checkpoint it was loaded from (empty otherwise).
    public var metadata: [String: String]
    /// The VAE of a latent model: clips are sampled as latents and decoded (nil: the model works on pixels).
    public var vae: AutoencoderKL?
    /// Set for a model trained with IDDPM (then `flow` is unused), with the method it samples by.
    public var diffusion: DiffusionSampler?
    public var diffusionMethod: DiffusionSampler.Method

    public init(model: any TextConditionedVideoModel, text: TextConditioner, flow: RectifiedFlow, steps: Int = 30, cfgScale: Double = 4,
                metadata: [String: String] = [:], vae: AutoencoderKL? = nil, diffusion: DiffusionSampler? = nil,
                diffusionMethod: DiffusionSampler.Method = .ddim(eta: 0)) {
        self.diffusion = diffusion
        self.diffusionMethod = diffusionMethod
        self.model = model
        self.text = text
        self.flow = flow
        self.steps = steps
        self.cfgScale = cfgScale
        self.metadata = metadata
        self.vae = vae
    }

    /// The prompts its training data left out (`held_out_prompts` in the checkpoint).
    public var heldOutPrompts: Set<SyntheticVideos.Prompt> {
        let captions = metadata["held_out_prompts"].flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }
        return Set((captions ?? []).compactMap(SyntheticVideos.Prompt.init(caption:)))
    }

    /// Loads a `kinema train` video checkpoint (EMA weights unless `preferEMA` is false) with the text encoder and
    /// timestep shift it was trained with; `textEncoder` overrides the encoder's folder. `diffusionMethod` is the
    /// sampler of an IDDPM checkpoint; a rectified-flow one takes only the default (its Euler steps).
    public static func load(checkpoint: URL, backend: any Backend, dtype: DType = .f32, preferEMA: Bool = true,
                            textEncoder: String? = nil, steps: Int, cfgScale: Double,
                            diffusionMethod: DiffusionSampler.Method = .ddim(eta: 0)) throws -> (VideoGenerator, frames: Int, imageSize: Int) {
        let (model, metadata) = try VideoModelCheckpoint.load(checkpoint, backend: backend, dtype: dtype,
                                                              preferEMA: preferEMA)
        guard let folder = textEncoder ?? metadata["text_encoder"],
              let length = metadata["caption_length"].flatMap(Int.init),
              let frames = metadata["frames"].flatMap(Int.init), let imageSize = metadata["image_size"].flatMap(Int.init) else {
            throw TrainingError.checkpoint(path: checkpoint.path, reason: "no text encoder, caption length, frame "
                                           + "count or image size recorded")
        }
        let text = try TextConditioner(folder: folder, backend: backend, length: length)
        let shift = metadata["timestep_shift"].flatMap {
            try? JSONDecoder().decode(RectifiedFlow.ResolutionShift.self, from: Data($0.utf8))
        }
        let flow = RectifiedFlow(shift: shift)
        let vae = try metadata["vae"].flatMap { $0.isEmpty ? nil : $0 }.map {
            try AutoencoderKLCheckpoint.load(folder: $0, backend: backend, dtype: dtype)
        }
        let diffusion = metadata["objective"] == "iddpm"
            ? try DiffusionSampler(method: diffusionMethod, steps: steps,
                                   learnSigma: model.outChannels == 2 * model.inChannels) : nil
        guard diffusion != nil || diffusionMethod == .ddim(eta: 0) else {
            throw TrainingError.checkpoint(path: checkpoint.path, reason: "a rectified-flow checkpoint samples by Euler "
                                           + "steps: --sampler and --eta apply to IDDPM checkpoints only")
        }
        return (VideoGenerator(model: model, text: text, flow: flow, steps: steps, cfgScale: cfgScale, metadata: metadata,
                               vae: vae, diffusion: diffusion, diffusionMethod: diffusionMethod),
                frames, imageSize)
    }

    /// One clip per prompt of `height` × `width` pixels, [B, C, F, H, W] in the model's io dtype (latents
    /// [B, 4, F, H/f, W/f] for a latent model: `videos` decodes them), from noise drawn with `seed`. `firstFrames`
    /// (per prompt, RGB CHW floats in [-1, 1] of H × W, or nil) are kept as the clips' first frames.
    public func generate(prompts: [String], frames: Int, height pixelHeight: Int, width pixelWidth: Int, seed: UInt64,
                         firstFrames: [[Float]?]? = nil, progress: SamplingProgress? = nil) throws -> Tensor {
        let backend = model.backend, batch = prompts.count, channels = model.inChannels
        let factor = vae?.config.downsampling ?? 1, unit = factor * model.patchSize
        guard batch > 0, frames >= 1, frames % model.temporalPatch == 0, pixelHeight % unit == 0,
              pixelWidth % unit == 0 else {
            throw GenerationError.badSize("need at least one prompt, a frame count that is a multiple of "
                + "\(model.temporalPatch) and a size that is a multiple of \(unit) (got \(frames) frames of "
                + "\(pixelHeight)×\(pixelWidth))")
        }
        let (height, width) = (pixelHeight / factor, pixelWidth / factor)
        let shape = [batch, channels, frames, height, width]
        let noise = backend.randomNormal(shape, dtype: model.ioDType, seed: seed, offset: 0)
        let (cond, condMask) = text.encode(prompts)
        let (null, nullMask) = text.encode([String](repeating: "", count: batch))
        let captions = backend.concat([cond, null], axis: 0), masks = backend.concat([condMask, nullMask], axis: 0)
        let model = self.model, scale = cfgScale
        var condition: (latents: Tensor, frameMask: [[Bool]])?
        if let firstFrames {
            guard firstFrames.count == batch else { throw GenerationError.badSize("one first frame (or nil) per prompt") }
            guard firstFrames.allSatisfy({ ($0?.count ?? 3 * pixelHeight * pixelWidth) == 3 * pixelHeight * pixelWidth }) else {
                throw GenerationError.badSize("a first frame must hold 3 × \(pixelHeight) × \(pixelWidth) values")
            }
            let perFrame = channels * height * width
            var clean = [Float](repeating: 0, count: batch * perFrame * frames)
            for (b, pixels) in firstFrames.enumerated() {
                guard let pixels else { continue }
                // A latent model keeps the frame's latents: the VAE's view of the image.
                let frame = vae.map { vae in
                    backend.download(backend.cast(vae.encodeVideo(backend.upload(pixels, shape: [1, 3, 1, pixelHeight, pixelWidth],
                                                                                 dtype: .f32)), to: .f32))
                } ?? pixels
                for c in 0..<channels {
                    let source = c * height * width, target = ((b * channels + c) * frames) * height * width
                    clean.replaceSubrange(target..<(target + height * width), with: frame[source..<(source + height * width)])
                }
            }
            condition = (backend.upload(clean, shape: shape, dtype: model.ioDType),
                         FrameMask.firstFrame(firstFrames.map { $0 != nil }, frames: frames))
        }
        // Both samplers' model: one pass over [x; x] with [captions; empty captions], the C predicted channels
        // (velocity or ε) guided, the conditional half kept.
        let guided: VelocityModel = { x, timesteps in
            let t = backend.upload(timesteps + timesteps, shape: [2 * batch], dtype: model.ioDType)
            let out = model.predict(backend.concat([x, x], axis: 0), timesteps: t, captions: captions, captionMask: masks)
            return ClassifierFreeGuidance.combineConditionalHalf(out, scale: scale, guidedChannels: channels,
                                                                 backend: backend)
        }
        if let diffusion {
            var random = RandomStream(seed: seed)
            return diffusion.sample(diffusionMethod, shape: shape, dtype: model.ioDType,
                                    denoiser: { x, timesteps in guided(x, timesteps.map(Double.init)) },
                                    random: &random, initialNoise: noise, condition: condition, backend: backend,
                                    progress: progress)
        }
        let size = RectifiedFlow.InputSize(height: pixelHeight, width: pixelWidth, frames: frames)
        return flow.sample(noise: noise, steps: steps, size: size, model: guided, condition: condition,
                           backend: backend, progress: progress)
    }

    /// Clips in [-1, 1] (decoded first for a latent model) as 8-bit frames, one array of frames per clip.
    public func videos(_ generated: Tensor) -> [[RGBImage]] {
        let samples = vae.map { $0.decodeVideo(generated) } ?? generated
        precondition(samples.rank == 5 && samples.shape[1] == 3, "videos: samples must be RGB [B, 3, F, H, W]")
        let values = model.backend.download(model.backend.cast(samples, to: .f32))
        let (batch, frames, height, width) = (samples.shape[0], samples.shape[2], samples.shape[3], samples.shape[4])
        let plane = height * width
        return (0..<batch).map { b in
            (0..<frames).map { f in
                var chw = [Float](repeating: 0, count: 3 * plane)
                for c in 0..<3 {
                    let start = ((b * 3 + c) * frames + f) * plane
                    chw.replaceSubrange((c * plane)..<((c + 1) * plane), with: values[start..<(start + plane)])
                }
                return RGBImage(chwFloats: chw, width: width, height: height)
            }
        }
    }
}

/// `kinema eval-synthetic` on a video checkpoint: N clips per prompt of the synthetic videos, each scored for the
/// colour, shape and direction it was asked for (chance for all three: 1/48).
public struct SyntheticVideoEvaluation {
    public struct Result: Sendable {
        public var accuracy, colourAccuracy, shapeAccuracy, directionAccuracy: Double
        public var clips: [[RGBImage]]
        public var prompts: [SyntheticVideos.Prompt]
        /// directionCounts[asked][seen]: how often a clip asked to move one way was seen moving each way (the last
        /// column: no object found).
        public var directionCounts: [[Int]]
        /// The accuracy (all three right) on the generator's held-out prompts and on the others; nil without any.
        public var heldOutAccuracy: Double?, seenAccuracy: Double?
    }

    public static func run(generator: VideoGenerator, perPrompt: Int, frames: Int, imageSize: Int, seed: UInt64,
                           prompts: [SyntheticVideos.Prompt] = SyntheticVideos.Prompt.all, batchSize: Int = 48,
                           progress: ((Int, Int) -> Void)? = nil) throws -> Result {
        let asked = prompts.flatMap { [SyntheticVideos.Prompt](repeating: $0, count: perPrompt) }
        var clips: [[RGBImage]] = []
        for (index, start) in stride(from: 0, to: asked.count, by: batchSize).enumerated() {
            let chunk = asked[start..<min(start + batchSize, asked.count)].map(\.description)
            clips += generator.videos(try generator.generate(prompts: chunk, frames: frames, height: imageSize,
                                                             width: imageSize, seed: seed &+ UInt64(index)))
            progress?(clips.count, asked.count)
        }
        let classifier = SyntheticVideoClassifier()
        var all = 0, colours = 0, shapes = 0, directions = 0
        let heldOut = generator.heldOutPrompts
        var heldOutRight = 0, heldOutCount = 0
        let ways = SyntheticVideos.Direction.allCases.count
        var counts = [[Int]](repeating: [Int](repeating: 0, count: ways + 1), count: ways)
        for (clip, prompt) in zip(clips, asked) {
            counts[prompt.direction.rawValue][classifier.direction(clip)?.rawValue ?? ways] += 1
            let isHeldOut = heldOut.contains(prompt)
            heldOutCount += isHeldOut ? 1 : 0
            guard let seen = classifier.predict(clip) else { continue }
            heldOutRight += isHeldOut && seen == prompt ? 1 : 0
            colours += seen.colour == prompt.colour ? 1 : 0
            shapes += seen.shape == prompt.shape ? 1 : 0
            directions += seen.direction == prompt.direction ? 1 : 0
            all += seen == prompt ? 1 : 0
        }
        let n = Double(asked.count), seenCount = asked.count - heldOutCount
        return Result(accuracy: Double(all) / n, colourAccuracy: Double(colours) / n, shapeAccuracy: Double(shapes) / n,
                      directionAccuracy: Double(directions) / n, clips: clips, prompts: asked,
                      directionCounts: counts,
                      heldOutAccuracy: heldOutCount == 0 ? nil : Double(heldOutRight) / Double(heldOutCount),
                      seenAccuracy: heldOutCount == 0 || seenCount == 0 ? nil
                        : Double(all - heldOutRight) / Double(seenCount))
    }
}
