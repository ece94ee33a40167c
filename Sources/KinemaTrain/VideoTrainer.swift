import Foundation
import KinemaData
import KinemaDiffusion
import KinemaModels
import KinemaNN
import KinemaTensor

/// How a video model learns to denoise: rectified flow (Open-Sora 1.2; velocity, Euler sampling) or IDDPM's Gaussian
/// diffusion (DiT's: ε and, with learned sigma, the variance through the variational bound; DDIM/DDPM sampling).
public enum VideoObjective: Sendable {
    case rectifiedFlow(RectifiedFlow)
    case iddpm(GaussianDiffusion)

    /// What the checkpoint header records: "rectified-flow" or "iddpm".
    public var name: String {
        switch self {
        case .rectifiedFlow: return "rectified-flow"
        case .iddpm: return "iddpm"
        }
    }

    public var flow: RectifiedFlow? {
        if case .rectifiedFlow(let flow) = self { return flow }
        return nil
    }
}

/// The text-to-video training loop: a Latte, STDiT or video DiT on captioned videos with the rectified-flow or IDDPM loss, captions encoded by a
/// frozen text encoder (dropped to the empty caption with `captionDropout`, for classifier-free guidance), and
/// Open-Sora's first-frame conditioning: with `firstFrameProbability` a video's first frame stays clean in x_t and
/// leaves the loss, so the model also learns to continue a given image (image-to-video). Clipped AdamW, EMA,
/// JSON-lines logging and atomic checkpoints that resume bit-exactly, as the DiT trainer.
public final class VideoTrainer {
    public let model: any CheckpointableVideoModel
    public let text: TextConditioner?
    public let objective: VideoObjective
    public let captionDropout: Double
    public let firstFrameProbability: Double
    /// The frozen VAE that turns clips into the latents the model learns (nil: the model works on pixels).
    public let vae: AutoencoderKL?
    let data: any VideoDataSource
    let training: TrainingRun
    var backend: any Backend { model.backend }
    public var options: TrainingOptions { training.options }

    /// `text` encodes the captions of pixel data (and `vae` its clips); a latent cache (`EncodedVideoSource`) brings
    /// both encoded, and needs neither.
    public init(model: any CheckpointableVideoModel, text: TextConditioner?, data: any VideoDataSource,
                objective: VideoObjective, options: TrainingOptions, captionDropout: Double = 0.1,
                firstFrameProbability: Double = 0, vae: AutoencoderKL? = nil) throws {
        let cache = (data as? any EncodedVideoSource)?.index
        guard cache == nil || vae == nil, cache != nil || text != nil else {
            throw TrainingError.options("a latent cache comes encoded (no VAE or text encoder to give); other data needs "
                                        + "a text encoder")
        }
        let channels = cache?.latentChannels ?? vae?.config.latentChannels ?? 3
        let factor = cache?.downsampling ?? vae?.config.downsampling ?? 1
        let width = cache?.captionWidth ?? text!.width
        guard model.inChannels == channels, model.captionChannels == width else {
            throw TrainingError.options("the model takes \(model.inChannels) channels and captions "
                + "\(model.captionChannels) wide; the data gives \(channels) (\(factor == 1 ? "RGB" : "VAE latents")) "
                + "and captions \(width) wide")
        }
        let unit = factor * model.patchSize
        if let shape = data.clipShapes.first(where: {
            $0.height % unit != 0 || $0.width % unit != 0 || $0.frames % model.temporalPatch != 0
        }) {
            let vaeFactor = factor == 1 ? "" : " times the VAE's downsampling \(factor)"
            throw TrainingError.options("clips of \(shape) (height x width x frames) do not fit the model: sides must "
                + "be multiples of the patch size \(model.patchSize)\(vaeFactor) and frames of the temporal patch "
                + "\(model.temporalPatch)")
        }
        self.vae = vae
        guard (0...1).contains(captionDropout), (0...1).contains(firstFrameProbability) else {
            throw TrainingError.options("caption dropout and first-frame probability must lie in 0...1")
        }
        if case .iddpm(let diffusion) = objective {
            guard model.outChannels == (diffusion.learnSigma ? 2 : 1) * model.inChannels else {
                throw TrainingError.options("IDDPM\(diffusion.learnSigma ? " with learned variance" : "") needs "
                    + "\(diffusion.learnSigma ? 2 : 1) × \(model.inChannels) output channels; the model has \(model.outChannels)")
            }
        }
        self.model = model
        self.text = text
        self.data = data
        self.objective = objective
        self.captionDropout = captionDropout
        self.firstFrameProbability = firstFrameProbability
        training = try TrainingRun(arena: model.arena, dataCount: data.count, groups: data.sampleGroups, options: options)
    }

    public var step: Int { training.step }
    public var state: TrainingState { training.state }

    var cache: LatentCacheIndex? { (data as? any EncodedVideoSource)?.index }

    /// What `kinema sample` needs besides the model: the text encoder, the caption length, the clip size and the
    /// timestep shift it was trained with.
    public var runMetadata: [String: String] {
        ["text_encoder": cache?.textEncoder ?? text!.folder,
         "caption_length": "\(cache?.captionLength ?? text!.length)", "frames": "\(data.frames)",
         "image_size": "\(data.imageSize)",
         "held_out_prompts": String(decoding: try! JSONEncoder().encode(data.heldOutCaptions), as: UTF8.self),
         "vae": cache?.vae ?? vae?.folder ?? "",
         "objective": objective.name,
         "timestep_shift": objective.flow?.shift.flatMap { try? String(decoding: JSONEncoder().encode($0), as: UTF8.self) }
            ?? "none"]
    }

    public func resume(from url: URL) throws {
        try training.resume(from: url, model: model)
    }

    public func saveCheckpoint(to url: URL) throws {
        try TrainingCheckpoint.save(to: url, model: model, ema: training.ema, optimizer: training.optimizer, state: state,
                                    metadata: runMetadata)
    }

    /// The next batch: clips (their latents with a VAE or a cache) [B, C, T, h, w], caption states and masks (a
    /// caption dropped to the null caption with `captionDropout`), and the clips' size in pixels.
    private func nextBatch() -> (x: Tensor, states: Tensor, mask: Tensor, pixelSize: (height: Int, width: Int)) {
        let indices = training.sampler.nextBatch()
        guard let encoded = data as? any EncodedVideoSource else {
            let batch = data.batch(indices: indices, random: &training.random)
            let pixels = backend.upload(batch.videos, shape: batch.shape, dtype: model.ioDType)
            let x = vae.map { backend.cast($0.encodeVideo(pixels), to: model.ioDType) } ?? pixels
            let captions = batch.captions.map { training.random.nextUniform() < Float(captionDropout) ? "" : $0 }
            let (states, mask) = text!.encode(captions)
            return (x, states, mask, (batch.shape[3], batch.shape[4]))
        }
        let batch: (latents: [Float], shape: [Int], states: [Float], mask: [Int32], captions: [String])
        do {
            batch = try encoded.encodedBatch(indices: indices)
        } catch {
            preconditionFailure("the latent cache cannot be read: \(error)")
        }
        var states = batch.states, mask = batch.mask
        let (null, length, width) = (encoded.nullCaption, encoded.index.captionLength, encoded.index.captionWidth)
        for row in indices.indices where training.random.nextUniform() < Float(captionDropout) {
            states.replaceSubrange((row * length * width)..<((row + 1) * length * width), with: null.states)
            mask.replaceSubrange((row * length)..<((row + 1) * length), with: null.mask)
        }
        let factor = encoded.index.downsampling
        return (backend.upload(batch.latents, shape: batch.shape, dtype: model.ioDType),
                backend.upload(states, shape: [indices.count, length, width], dtype: .f32),
                backend.upload(mask, shape: [indices.count, length]),
                (batch.shape[3] * factor, batch.shape[4] * factor))
    }

    /// One optimisation step on the next batch; `imagesPerSecond` counts videos.
    public func trainStep() -> StepMetrics {
        let start = DispatchTime.now().uptimeNanoseconds
        let (xStart, states, mask, pixelSize) = nextBatch()
        let count = xStart.shape[0], frames = xStart.shape[2]
        var frameMask: FrameMask?
        if firstFrameProbability > 0 {
            let conditioned = (0..<count).map { _ in training.random.nextUniform() < Float(firstFrameProbability) }
            frameMask = FrameMask(FrameMask.firstFrame(conditioned, frames: frames), like: xStart, backend: backend)
        }
        let (lossValue, mse, vb): (Double, Double, Double?)
        switch objective {
        case .rectifiedFlow(let flow):
            let size = RectifiedFlow.InputSize(height: pixelSize.height, width: pixelSize.width, frames: frames)
            let (timesteps, noise, xT) = flow.noisedBatch(xStart, size: size, frameMask: frameMask,
                                                          random: &training.random, backend: backend)
            let t = backend.upload(timesteps, shape: [count], dtype: model.ioDType)
            (lossValue, _) = model.trainingStep(xT, timesteps: t, captions: states, captionMask: mask) { output in
                let loss = flow.trainingLoss(modelOutput: output, xStart: xStart, noise: noise, frameMask: frameMask,
                                             backend: backend)
                return (loss.loss, loss.gradient)
            }
            (mse, vb) = (lossValue, nil)
        case .iddpm(let diffusion):
            let (timesteps, noise, xT) = diffusion.noisedBatch(xStart, frameMask: frameMask, random: &training.random,
                                                               backend: backend)
            let t = backend.upload(timesteps.map(Double.init), shape: [count], dtype: model.ioDType)
            var terms: GaussianDiffusion.TrainingLoss?
            (lossValue, _) = model.trainingStep(xT, timesteps: t, captions: states, captionMask: mask) { output in
                let loss = diffusion.trainingLoss(modelOutput: output, xStart: xStart, xT: xT, noise: noise,
                                                  timesteps: timesteps, frameMask: frameMask, backend: backend)
                terms = loss
                return (loss.loss, loss.gradient)
            }
            (mse, vb) = (terms!.meanMSE, terms!.meanVB)
        }
        let (norm, rate) = training.update(model.arena)
        backend.synchronize()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return StepMetrics(step: training.step, loss: lossValue, mse: mse, vb: vb, gradNorm: norm, lr: rate,
                           imagesPerSecond: Double(count) / seconds)
    }

    public func run(checkpoint: URL?, log: TrainingLog) throws {
        try TrainingLoop.run(steps: options.steps, logEvery: options.logEvery,
                             checkpointEvery: options.checkpointEvery, step: { step }, train: trainStep,
                             save: checkpoint.map { url in { try self.saveCheckpoint(to: url) } }, log: log)
    }
}
