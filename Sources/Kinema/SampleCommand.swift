import ArgumentParser
import Foundation
import KinemaData
import KinemaDiffusion
import KinemaModels
import KinemaTensor
import KinemaTrain

/// The sampling options `sample` and `eval-synthetic` share.
struct SamplingOptions: ParsableArguments {
    @Option(help: "A .safetensors checkpoint (original DiT layout or `kinema train` output) or a diffusers folder.")
    var checkpoint: String

    @Option(help: "Sampler: ddpm (ancestral) or ddim.") var sampler = "ddim"
    @Option(help: "Sampling steps (the 1000-step schedule is respaced to this many).") var steps = 50
    @Option(help: "DDIM η (0: deterministic).") var eta = 0.0
    @Option(help: "Classifier-free guidance scale (1: no guidance; default 1.5 for class labels, 4 for text).")
    var cfgScale: Double?
    @Option(help: "Seed of the sampling noise.") var seed: UInt64 = 0
    @Flag(help: "Use the raw training weights instead of their EMA (training checkpoints hold both).") var noEma = false
    @Option(help: "Attention heads, when neither the checkpoint's metadata nor its hidden size tells.") var numHeads: Int?
    @OptionGroup var deviceOptions: DeviceOptions

    func generator() throws -> ImageGenerator {
        let method = try samplerMethod()
        try validateCommon()
        let model = try DiTCheckpoint.load(path: checkpoint, backend: try deviceOptions.backend(),
                                           dtype: try deviceOptions.dtype(), preferEMA: !noEma, numHeads: numHeads)
        return ImageGenerator(model: model, sampler: method, steps: steps, cfgScale: cfgScale ?? 1.5, eta: eta)
    }

    private func samplerMethod() throws -> ImageGenerator.Sampler {
        guard let method = ImageGenerator.Sampler(rawValue: sampler) else {
            throw ValidationError("--sampler '\(sampler)' is not a sampler; use ddpm or ddim")
        }
        return method
    }

    private func validateCommon() throws {
        guard steps >= 1 && steps <= 1000 else { throw ValidationError("--steps must be in 1...1000, got \(steps)") }
        if let cfgScale, cfgScale < 1 { throw ValidationError("--cfg-scale must be ≥ 1, got \(cfgScale)") }
    }

    /// Whether --checkpoint is a text-to-video checkpoint of `kinema train` (a Latte, an STDiT or a video DiT).
    var isVideoCheckpoint: Bool {
        guard !FileManager.default.fileExists(atPath: URL(fileURLWithPath: checkpoint).appendingPathComponent("config.json").path),
              let file = try? SafetensorsFile(url: URL(fileURLWithPath: checkpoint)) else { return false }
        return VideoModelCheckpoint.kinds.contains { $0 == file.metadata["kinema_model"] }
    }

    /// The text-to-video sampler of a video checkpoint (rectified-flow Euler steps, or --sampler for an IDDPM one;
    /// guidance default 4), with the clip size it was trained at.
    func videoGenerator(textEncoder: String? = nil) throws -> (VideoGenerator, frames: Int, imageSize: Int) {
        try validateCommon()
        let method: DiffusionSampler.Method = try samplerMethod() == .ddpm ? .ddpm : .ddim(eta: eta)
        return try VideoGenerator.load(checkpoint: URL(fileURLWithPath: checkpoint), backend: try deviceOptions.backend(),
                                       dtype: try deviceOptions.dtype(), preferEMA: !noEma, textEncoder: textEncoder,
                                       steps: steps, cfgScale: cfgScale ?? 4, diffusionMethod: method)
    }
}

struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Sample images of chosen classes as a PNG grid, or a video clip from a text prompt.",
        discussion: """
        A class-conditional DiT writes a PNG grid (one row per class); latent-space models (4 input channels) write \
        their latents to a .safetensors file instead, until the VAE decoder lands. A text-to-video checkpoint of \
        `kinema train --data synthetic-video` takes --prompt (and optionally --image, a first frame to continue) \
        and writes --out as H.264 mp4 or GIF, with the Euler sampler of rectified flow (--steps) or, for an IDDPM \
        checkpoint, --sampler, and classifier-free guidance on the prompt.
        """)

    @OptionGroup var sampling: SamplingOptions
    @Option(name: .customLong("class"), help: "Classes to sample: 'all', an index, or a comma list.") var classes = "all"
    @Option(help: "Samples per class.") var perClass = 4
    @Option(name: [.customLong("output"), .customLong("out")],
            help: "Output: a PNG (or .safetensors of the raw samples) for images; an .mp4 or .gif for a clip.")
    var output = "out/samples.png"
    @Option(help: "Text prompt (video checkpoints).") var prompt: String?
    @Option(help: "First frame to continue: an image file, resized and center-cropped to the clip (image-to-video).")
    var image: String?
    @Option(help: "Frames of the clip (default: as trained).") var numFrames: Int?
    @Option(help: "Clip height in pixels (default: as trained).") var height: Int?
    @Option(help: "Clip width in pixels (default: as trained).") var width: Int?
    @Option(help: "Frames per second of the written clip.") var fps = 8.0
    @Option(help: "Scale the written clip up this many times (nearest neighbour), so tiny clips can be seen.")
    var upscale = 8
    @Option(help: "Text encoder folder, instead of the one the checkpoint names.") var textEncoder: String?
    @Flag(help: "Decode a latent model's frames in overlapping tiles (diffusers' enable_tiling): bounded memory for large frames.")
    var tiledVae = false

    func run() throws {
        if sampling.isVideoCheckpoint { return try runVideo() }
        guard prompt == nil, image == nil else {
            throw ValidationError("--prompt and --image need a text-to-video checkpoint; \(sampling.checkpoint) is not one")
        }
        guard perClass >= 1 else { throw ValidationError("--per-class must be at least 1") }
        let generator = try sampling.generator()
        let labels = try parseClasses(classes, classCount: generator.model.config.numClasses)
            .flatMap { [Int](repeating: $0, count: perClass) }
        let samples = try generator.generate(labels: labels, seed: sampling.seed) { step, total in
            FileHandle.standardError.write(Data("\rsampling step \(step)/\(total)".utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        let url = URL(fileURLWithPath: output)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        if url.pathExtension == "safetensors" || generator.model.config.inChannels != 3 {
            let target = url.pathExtension == "safetensors" ? url : url.deletingPathExtension().appendingPathExtension("safetensors")
            try SafetensorsWriter.write([(name: "samples", tensor: samples)], to: target, backend: generator.model.backend)
            printError("wrote \(labels.count) samples to \(target.path)")
            return
        }
        let grid = makeGrid(images: generator.images(samples), columns: perClass)
        try FFmpeg.writeImage(grid, toPath: url.path)
        printError("wrote a grid of \(labels.count) samples to \(url.path)")
    }

    /// Text (and image) to video: one clip for --prompt.
    func runVideo() throws {
        guard let prompt, !prompt.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw ValidationError("--prompt is required for a text-to-video checkpoint")
        }
        let url = URL(fileURLWithPath: output)
        guard ["mp4", "mkv", "mov", "gif"].contains(url.pathExtension.lowercased()) else {
            throw ValidationError("--out \(output): write a clip as .mp4, .mkv, .mov or .gif")
        }
        guard fps > 0, (1...32).contains(upscale) else {
            throw ValidationError("--fps must be positive and --upscale in 1...32")
        }
        let (generator, trainedFrames, trainedSize) = try sampling.videoGenerator(textEncoder: textEncoder)
        generator.vae?.tiling = tiledVae
        let frames = numFrames ?? trainedFrames, clipHeight = height ?? trainedSize, clipWidth = width ?? trainedSize
        guard frames >= 1, clipHeight >= 1, clipWidth >= 1 else {
            throw ValidationError("--num-frames, --height and --width must be positive")
        }
        var firstFrames: [[Float]?]?
        if let image {
            let decoded = try RGBImage(contentsOfFile: image)
            firstFrames = [decoded.centerCropResize(width: clipWidth, height: clipHeight).chwFloats()]
        }
        let samples = try generator.generate(prompts: [prompt], frames: frames, height: clipHeight, width: clipWidth,
                                             seed: sampling.seed, firstFrames: firstFrames) { step, total in
            FileHandle.standardError.write(Data("\rsampling step \(step)/\(total)".utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FFmpeg.writeVideo(generator.videos(samples)[0], fps: fps, scale: upscale, toPath: url.path)
        printError("wrote \(frames) frames of \(clipWidth)×\(clipHeight) (×\(upscale)) for \"\(prompt)\" to \(url.path)")
    }
}
