import ArgumentParser
import Foundation
import KinemaData
import KinemaDiffusion
import KinemaModels
import KinemaTrain

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a class-conditional DiT with DiT's diffusion loss, or a text-to-video model (Latte, STDiT or "
            + "a video DiT) with rectified flow or IDDPM.",
        discussion: """
        Logs one JSON object per --log-every steps (step, loss, mse, vb, gradNorm, lr, imagesPerSecond) to stdout and
        to OUTPUT/log.jsonl, with a progress bar on stderr when stdout is a terminal. Saves OUTPUT/checkpoint.safetensors
        (model, EMA, AdamW state, step, random state, config) every --checkpoint-every steps and at the end; each save
        goes to a temporary file that is flushed and renamed, so an interrupted save never damages the last one.

        With --data synthetic-video (bundled captioned clips: "a red square moving left") or a CSV of captioned
        videos (decoded through ffmpeg, --frame-interval apart, resized and centre-cropped to --image-size; an
        undecodable video is reported and skipped; --buckets for mixed sizes) or a latent cache of `kinema preprocess
        --cache`, the model is a Latte (alternating spatial and temporal blocks), with --video-model stdit an STDiT
        (Open-Sora 1.0: spatial, temporal and cross-attention in each block), or with --video-model video-dit a video
        DiT (3D patches, full attention, --conditioning adaln-zero|cross-attention|in-context) (--model tiny, or
        Latte-S/2 … Latte-XL/2, STDiT-XL/2, vDiT-XL/222) on RGB clips or VAE latents (--vae) of --num-frames frames,
        trained with rectified flow or --diffusion iddpm, conditioned on captions that a frozen text encoder turns
        into states (--text-encoder, default all-MiniLM-L6-v2 from the model cache: scripts/fetch-minilm installs it).
        Captions are dropped to the empty caption with --caption-dropout (for classifier-free guidance), and with
        --first-frame-prob a clip's first frame is kept clean and out of the loss (image-to-video).
        """)

    @Option(help: ArgumentHelp("Training data: 'synthetic' (bundled coloured shapes, 12 classes), 'synthetic-video' "
        + "(bundled captioned clips, 48 prompts), a CSV of captioned videos (path,text[,num_frames,height,width,fps], "
        + "as Open-Sora lays it out), a latent cache folder of `kinema preprocess --cache`, or a folder with one "
        + "subfolder of PNG/JPEG images per class.",
        valueName: "synthetic|synthetic-video|videos.csv|cache|folder"))
    var data = "synthetic"
    @OptionGroup var videoData: VideoDataOptions
    @OptionGroup var video: VideoTrainingOptions

    @Option(help: "Image side in pixels (images are center-cropped and resized to it).") var imageSize = 16
    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Images per step.") var batchSize = 32
    @Option(help: "Total optimisation steps (a resumed run continues up to this number).") var steps = 1000
    @Option(help: "AdamW learning rate.") var lr = 1e-3
    @Option(help: "Linear learning-rate warm-up steps.") var warmupSteps = 50
    @Option(help: "Learning rate after warm-up: constant, or cosine (decays to a tenth at --steps).")
    var lrDecay = "constant"
    @Option(help: "AdamW decoupled weight decay.") var weightDecay = 0.0
    @Option(help: "Clip the global gradient norm to this (0 disables).") var maxGradNorm = 1.0
    @Option(help: "Decay of the exponential moving average of the weights.") var emaDecay = 0.995
    @Option(help: "Seed for initialisation, data order, timesteps, noise and label dropout.") var seed: UInt64 = 0
    @Option(help: "Save a checkpoint every N steps (0: only at the end).") var checkpointEvery = 250
    @Option(help: "Write a log line every N steps.") var logEvery = 25
    @Option(help: "Output folder for checkpoint.safetensors and log.jsonl.") var output = "out/train"
    @Flag(help: "Continue from OUTPUT/checkpoint.safetensors, bit-exactly where it stopped.") var resume = false
    @OptionGroup var deviceOptions: DeviceOptions

    func run() throws {
        if data == "synthetic-video" || data.lowercased().hasSuffix(".csv") || LatentCacheIndex.isCache(data) {
            return try runVideo()
        }
        let backend = try deviceOptions.backend()
        let dataset = try openDataset(data, imageSize: imageSize, seed: seed)
        let config = try modelOptions.config(imageSize: imageSize, channels: 3, classes: dataset.numClasses)
        let model = try DiT(config: config, backend: backend, dtype: try deviceOptions.dtype(), seed: seed)
        let trainer = try Trainer(model: model, data: dataset, options: try trainingOptions())
        let folder = URL(fileURLWithPath: output)
        let checkpoint = folder.appendingPathComponent("checkpoint.safetensors")
        try resumeIfAsked(checkpoint, resume: trainer.resume) { trainer.step }
        printError("training \(model.parameterCount) parameters (\(config.hiddenSize) hidden, depth \(config.depth), "
            + "\(config.tokenCount) tokens) on \(dataset.count) images of \(dataset.numClasses) classes, \(backend.name)")
        try trainer.run(checkpoint: checkpoint,
                        log: try TrainingLog(jsonLinesFile: folder.appendingPathComponent("log.jsonl")))
        printError("saved \(checkpoint.path)")
    }

    /// With --resume, continues from `checkpoint` (which must exist).
    func resumeIfAsked(_ checkpoint: URL, resume load: (URL) throws -> Void, step: () -> Int) throws {
        guard resume else { return }
        guard FileManager.default.fileExists(atPath: checkpoint.path) else {
            throw ValidationError("--resume: no checkpoint at \(checkpoint.path); train without --resume first")
        }
        try load(checkpoint)
        printError("resumed from \(checkpoint.path) at step \(step())")
    }

    func trainingOptions() throws -> TrainingOptions {
        guard let decay = LearningRateSchedule.Decay(rawValue: lrDecay) else {
            throw ValidationError("--lr-decay '\(lrDecay)' is not a schedule; use constant or cosine")
        }
        return TrainingOptions(batchSize: batchSize, steps: steps, learningRate: lr, warmupSteps: warmupSteps,
                               learningRateDecay: decay, weightDecay: weightDecay, maxGradNorm: maxGradNorm,
                               emaDecay: emaDecay, seed: seed, checkpointEvery: checkpointEvery, logEvery: logEvery)
    }

    /// Text-to-video: a Latte, STDiT or video DiT on captioned clips (synthetic, a CSV, or a latent cache).
    func runVideo() throws {
        let backend = try deviceOptions.backend()
        let clips = try openVideoClips(data, video: videoData, imageSize: imageSize, seed: seed)
        let cache = (clips as? LatentCacheDataset)?.index
        guard cache == nil || (videoData.vae == nil && videoData.textEncoder == nil) else {
            throw ValidationError("\(data) is a latent cache, encoded by \(cache!.vae.isEmpty ? "no VAE" : cache!.vae) and "
                + "\(cache!.textEncoder): drop --vae and --text-encoder")
        }
        let text = cache == nil ? try TextConditioner(folder: videoData.textEncoder ?? TextConditioner.defaultFolder,
                                                      backend: backend, length: videoData.captionLength) : nil
        let vae = cache == nil
            ? try videoData.vae.map { try AutoencoderKLCheckpoint.load(folder: $0, backend: backend) } : nil
        let factor = cache?.downsampling ?? vae?.config.downsampling ?? 1
        let imageSize = cache == nil ? self.imageSize : clips.imageSize, captionWidth = cache?.captionWidth ?? text!.width
        guard imageSize % factor == 0 else {
            throw ValidationError("--image-size \(imageSize) must be a multiple of the VAE's downsampling \(factor)")
        }
        let channels = cache?.latentChannels ?? vae?.config.latentChannels ?? 3, dtype = try deviceOptions.dtype()
        let objective: VideoObjective
        switch video.diffusion {
        case "rectified-flow":
            let shift = try video.shift(imageSize: imageSize, frames: videoData.numFrames)
            objective = .rectifiedFlow(RectifiedFlow(shift: shift))
        case "iddpm": objective = .iddpm(GaussianDiffusion(learnSigma: true))
        default: throw ValidationError("--diffusion '\(video.diffusion)': use rectified-flow or iddpm")
        }
        let outChannels = objective.name == "iddpm" ? 2 * channels : channels  // IDDPM learns the variance too
        let model: any CheckpointableVideoModel
        switch try video.architecture(modelOptions.model) {
        case VideoDiT.modelKind:
            model = try VideoDiT(config: modelOptions.videoDiTConfig(channels: channels, outChannels: outChannels,
                                                                     captionChannels: captionWidth,
                                                                     temporalPatch: video.temporalPatch,
                                                                     conditioning: video.conditioning),
                                 backend: backend, dtype: dtype, seed: seed)
        case let kind:
            let config = try modelOptions.videoConfig(imageSize: imageSize / factor, channels: channels,
                                                      outChannels: outChannels, captionChannels: captionWidth)
            model = kind == STDiT.modelKind
                ? try STDiT(config: config, backend: backend, dtype: dtype, seed: seed)
                : try Latte(config: config, videoLength: clips.frames, backend: backend, dtype: dtype, seed: seed)
        }
        let trainer = try VideoTrainer(model: model, text: text, data: clips, objective: objective,
                                       options: try trainingOptions(),
                                       captionDropout: video.captionDropout,
                                       firstFrameProbability: video.firstFrameProb,
                                       vae: vae)
        let folder = URL(fileURLWithPath: output)
        let checkpoint = folder.appendingPathComponent("checkpoint.safetensors")
        try resumeIfAsked(checkpoint, resume: trainer.resume) { trainer.step }
        let side = imageSize / factor / model.patchSize, tokens = clips.frames / model.temporalPatch * side * side
        printError("training a \(type(of: model).modelKind) model of \(model.parameterCount) parameters "
            + "(\(tokens) tokens a clip) on \(clips.count) clips of "
            + "\(clips.clipShapes.map(\.description).joined(separator: ", ")) (\(data)), captions by "
            + "\(cache?.textEncoder ?? text!.folder), \(backend.name)")
        try trainer.run(checkpoint: checkpoint,
                        log: try TrainingLog(jsonLinesFile: folder.appendingPathComponent("log.jsonl")))
        printError("saved \(checkpoint.path)")
    }
}

/// The clips a video run reads: the bundled synthetic ones (`syntheticCount` of them), a CSV of videos (bucketed with
/// --buckets), or a latent cache of `kinema preprocess --cache` (encoded already).
func openVideoClips(_ data: String, video: VideoDataOptions, imageSize: Int, seed: UInt64,
                    syntheticCount: Int = 50_000) throws -> any VideoDataSource {
    let buckets = try video.buckets.map { try VideoBuckets(spec: $0) }
    // A cache holds its clips' shapes already: --buckets there only gives shapes their batch sizes.
    if LatentCacheIndex.isCache(data) {
        return try LatentCacheDataset(folder: data, batchSizes: buckets?.batchSizes ?? [:])
    }
    guard imageSize >= 8, video.numFrames >= 2 else {
        throw ValidationError("--image-size must be at least 8 and --num-frames at least 2 for videos")
    }
    guard video.holdOut == "default" || video.holdOut == "none" else {
        throw ValidationError("--hold-out '\(video.holdOut)': use default or none")
    }
    guard video.buckets == nil || data != "synthetic-video" else {
        throw ValidationError("--buckets applies to a CSV of videos; the synthetic clips have one shape")
    }
    guard video.frameInterval >= 1 else { throw ValidationError("--frame-interval must be at least 1") }
    return data == "synthetic-video"
        ? SyntheticVideos(frames: video.numFrames, imageSize: imageSize, count: syntheticCount, seed: seed,
                          heldOut: video.holdOut == "default" ? SyntheticVideos.defaultHeldOut : [])
        : try VideoCSVDataset(csv: data, frames: video.numFrames, frameInterval: video.frameInterval,
                              imageSize: imageSize, buckets: buckets, seed: seed)
}

/// The clips and captions of a video run: what `kinema train` reads and `kinema preprocess --cache` encodes.
struct VideoDataOptions: ParsableArguments {
    @Option(help: "Frames per clip (video data).") var numFrames = 8
    @Option(help: ArgumentHelp("Buckets for a CSV of videos of mixed sizes, HEIGHTxWIDTHxFRAMES[:BATCH][@KEEP],… "
        + "(e.g. 16x16x8:32,16x24x8:24@0.5,24x16x4): each video trains at the bucket closest to its aspect ratio that "
        + "it fills (that bucket keeping it with probability KEEP, else the next), a batch holds one bucket, BATCH of "
        + "them (default --batch-size); replaces --image-size and --num-frames as the clip shape. With a latent "
        + "cache, the batch sizes of its clip shapes."))
    var buckets: String?
    @Option(help: "Take every N-th frame of a CSV dataset's videos.") var frameInterval = 1
    @Option(help: ArgumentHelp("Text encoder folder (transformers BERT, T5 or CLIP text model with its tokenizer); "
        + "default all-MiniLM-L6-v2 in the model cache."))
    var textEncoder: String?
    @Option(help: "Caption tokens (padded or cut).") var captionLength = 16
    @Option(help: "A diffusers AutoencoderKL folder: train on its latents of the clips (frame by frame) instead of pixels.")
    var vae: String?
    @Option(help: ArgumentHelp("Prompts kept out of the synthetic clips so eval-synthetic can score unseen "
        + "combinations: default (a yellow triangle moving up, a red circle moving right, a green square moving down, "
        + "a blue triangle moving left) or none.", valueName: "default|none"))
    var holdOut = "default"
}

/// The options of text-to-video training (beside its data's, VideoDataOptions).
struct VideoTrainingOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The text-to-video architecture: latte, stdit or video-dit (3D patches, full "
        + "attention; an STDiT-XL/2 or vDiT-… --model implies its architecture)."))
    var videoModel = "latte"
    @Option(help: "How a video-dit reads the caption: adaln-zero, cross-attention or in-context.")
    var conditioning = VideoDiTConfig.Conditioning.crossAttention
    @Option(help: "Frames per patch of a video-dit.") var temporalPatch = 2
    @Option(help: ArgumentHelp("The training objective: rectified-flow (Open-Sora 1.2; Euler sampling) or iddpm "
        + "(DiT's Gaussian diffusion with learned variance; DDIM sampling)."))
    var diffusion = "rectified-flow"

    /// latte, stdit or video-dit, from --video-model and --model.
    func architecture(_ model: String) throws -> String {
        guard VideoModelCheckpoint.kinds.contains(videoModel) else {
            throw ValidationError("--video-model '\(videoModel)': use " + VideoModelCheckpoint.kinds.joined(separator: ", "))
        }
        if model.hasPrefix("STDiT") { return STDiT.modelKind }
        return model.hasPrefix("vDiT") ? VideoDiT.modelKind : videoModel
    }

    @Option(help: "Probability of training on the empty caption (for classifier-free guidance).") var captionDropout = 0.1
    @Option(help: ArgumentHelp("Probability of keeping a clip's first frame clean and out of the loss, so the model "
        + "also learns image-to-video (`kinema sample --image`), with either objective."))
    var firstFrameProb = 0.2
    @Option(help: ArgumentHelp("Timestep shift t ↦ r·t/(1 + (r − 1)·t): none; open-sora (r by resolution and length "
        + "as Open-Sora 1.2, for latent models at its sizes); or a constant r > 0 (r > 1 trains and samples more "
        + "near the noise end, where the layout and motion of a clip are decided).", valueName: "none|open-sora|r"))
    var timestepShift = "none"

    /// The timestep shift of clips of `imageSize` pixels a side and `frames` frames.
    func shift(imageSize: Int, frames: Int) throws -> RectifiedFlow.ResolutionShift? {
        switch timestepShift {
        case "none": return nil
        case "open-sora": return RectifiedFlow.ResolutionShift()
        default:
            guard let ratio = Double(timestepShift), ratio > 0 else {
                throw ValidationError("--timestep-shift '\(timestepShift)': use none, open-sora or a positive number")
            }
            // The clip's own size as the base: the ratio is r itself.
            return RectifiedFlow.ResolutionShift(basePixels: Double(imageSize * imageSize), baseFrames: Double(frames),
                                                 scale: ratio)
        }
    }
}
