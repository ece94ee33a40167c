import ArgumentParser
import Foundation
import KinemaData
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
    @Option(help: "Classifier-free guidance scale (1: no guidance).") var cfgScale = 1.5
    @Option(help: "Seed of the sampling noise.") var seed: UInt64 = 0
    @Flag(help: "Use the raw training weights instead of their EMA (training checkpoints hold both).") var noEma = false
    @Option(help: "Attention heads, when neither the checkpoint's metadata nor its hidden size tells.") var numHeads: Int?
    @OptionGroup var deviceOptions: DeviceOptions

    func generator() throws -> ImageGenerator {
        guard let method = ImageGenerator.Sampler(rawValue: sampler) else {
            throw ValidationError("--sampler '\(sampler)' is not a sampler; use ddpm or ddim")
        }
        guard steps >= 1 && steps <= 1000 else { throw ValidationError("--steps must be in 1...1000, got \(steps)") }
        guard cfgScale >= 1 else { throw ValidationError("--cfg-scale must be ≥ 1, got \(cfgScale)") }
        let model = try DiTCheckpoint.load(path: checkpoint, backend: try deviceOptions.backend(),
                                           dtype: try deviceOptions.dtype(), preferEMA: !noEma, numHeads: numHeads)
        return ImageGenerator(model: model, sampler: method, steps: steps, cfgScale: cfgScale, eta: eta)
    }
}

struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Sample images of chosen classes and write them as a PNG grid (one row per class).",
        discussion: "Latent-space models (4 input channels) write their latents to a .safetensors file instead, "
            + "until the VAE decoder lands.")

    @OptionGroup var sampling: SamplingOptions
    @Option(name: .customLong("class"), help: "Classes to sample: 'all', an index, or a comma list.") var classes = "all"
    @Option(help: "Samples per class.") var perClass = 4
    @Option(help: "Output PNG (or .safetensors of the raw samples).") var output = "out/samples.png"

    func run() throws {
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
}
