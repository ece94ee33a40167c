import ArgumentParser
import Foundation
import KinemaCPU
import KinemaCUDA
import KinemaData
import KinemaModels
import KinemaTensor

/// Where the work runs.
struct DeviceOptions: ParsableArguments {
    @Option(help: "Device: cpu, cuda or cuda:N.")
    var device = "cpu"

    @Option(help: "CPU threads (default: all cores).")
    var threads: Int?

    @Option(help: ArgumentHelp("Model precision: fp32; bf16 (the model computes in bf16, CUDA only); or fp64, on "
        + "the CPU, for checking numerics.", valueName: "fp32|bf16|fp64"))
    var precision = "fp32"

    /// Rejects a bad --device/--precision pair when the command line is parsed, before any work starts.
    func validate() throws {
        _ = try dtype()
    }

    func backend() throws -> any Backend {
        guard let parsed = Device(parsing: device) else {
            throw ValidationError("--device '\(device)' is not a device; use cpu, cuda or cuda:N")
        }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
        switch parsed {
        case .cpu: return CPUBackend(threads: threads ?? ProcessInfo.processInfo.activeProcessorCount)
        case .cuda(let index): return try CUDABackend(index: index)
        }
    }

    func dtype() throws -> DType {
        let onCPU = Device(parsing: device) == .cpu
        switch precision {
        case "fp32", "f32": return .f32
        case "bf16":
            guard !onCPU else {
                throw ValidationError("bf16 mixed precision runs on CUDA: use --device cuda or --precision fp32")
            }
            return .bf16
        case "fp64", "f64":
            guard onCPU else { throw ValidationError("--precision fp64 is a CPU mode; use fp32 or bf16 on \(device)") }
            return .f64
        default:
            throw ValidationError("--precision '\(precision)' is not a precision; use fp32, bf16 (CUDA) or fp64 (CPU)")
        }
    }
}

/// The DiT shape for a new model: a paper name or `tiny`, with optional overrides.
struct ModelOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Model: one of \(DiTConfig.paperNames.joined(separator: ", ")), or tiny (a small "
        + "DiT for CPU runs: hidden 128, depth 4, 4 heads, patch 2); for `bench train` also "
        + "\(PixArtConfig.latteNames.joined(separator: ", ")) (text-to-video).", valueName: "name"))
    var model = "tiny"

    @Option(help: "Override the hidden size.") var hiddenSize: Int?
    @Option(help: "Override the number of blocks.") var depth: Int?
    @Option(help: "Override the number of attention heads.") var numHeads: Int?
    @Option(help: "Override the patch size.") var patchSize: Int?
    @Option(help: "Override the MLP hidden size as a multiple of the hidden size.") var mlpRatio: Double?
    @Option(help: "Probability of replacing a label by the null class in training (for classifier-free guidance).")
    var classDropout = 0.1

    func config(imageSize: Int, channels: Int, classes: Int) throws -> DiTConfig {
        var config: DiTConfig
        if model == "tiny" {
            config = DiTConfig(inputSize: imageSize, patchSize: 2, inChannels: channels, hiddenSize: 128, depth: 4,
                               numHeads: 4, numClasses: classes)
        } else {
            config = try DiTConfig.named(model, inputSize: imageSize, inChannels: channels, numClasses: classes)
        }
        config.hiddenSize = hiddenSize ?? config.hiddenSize
        config.depth = depth ?? config.depth
        config.numHeads = numHeads ?? config.numHeads
        config.patchSize = patchSize ?? config.patchSize
        config.mlpRatio = mlpRatio ?? config.mlpRatio
        config.classDropoutProb = classDropout
        try config.validate()
        return config
    }

    /// The Latte of --model for clips of `imageSize` × `channels` (RGB, or the latents of a VAE: pass its latent side
    /// and channel count) (tiny: hidden 128, depth 4, 4 heads, patch 2), predicting the velocity only (no learned
    /// variance), with captions `captionChannels` wide.
    func videoConfig(imageSize: Int, channels: Int = 3, outChannels: Int? = nil, captionChannels: Int) throws -> PixArtConfig {
        let patch = patchSize ?? 2
        guard imageSize % patch == 0 else {
            throw ValidationError("--image-size \(imageSize) must be a multiple of the patch size \(patch)")
        }
        var config = model == "tiny"
            ? PixArtConfig(sampleSize: imageSize, patchSize: patch, inChannels: channels, outChannels: channels,
                           hiddenSize: hiddenSize ?? 128, depth: depth ?? 4, numHeads: numHeads ?? 4,
                           captionChannels: captionChannels)
            : try latteConfig(latentSize: imageSize)
        config.inChannels = channels
        config.outChannels = outChannels ?? channels
        config.captionChannels = captionChannels
        if let mlpRatio { config.mlpHidden = Int(mlpRatio * Double(config.hiddenSize)) }
        config.captionDropoutProb = 0
        try config.validate()
        return config
    }

    /// The video DiT of --model (tiny: hidden 128, depth 4, 4 heads, patch 2; or vDiT-{S,B,L,XL}/{t}{p}{p}) for
    /// `channels`-channel clips and captions `captionChannels` wide, predicting the velocity only.
    func videoDiTConfig(channels: Int, outChannels: Int, captionChannels: Int, temporalPatch: Int,
                        conditioning: VideoDiTConfig.Conditioning) throws -> VideoDiTConfig {
        var config = model == "tiny"
            ? VideoDiTConfig(patchSize: patchSize ?? 2, temporalPatch: temporalPatch, hiddenSize: hiddenSize ?? 128,
                             depth: depth ?? 4, numHeads: numHeads ?? 4, captionChannels: captionChannels)
            : try VideoDiTConfig.named(model, captionChannels: captionChannels)
        config.hiddenSize = hiddenSize ?? config.hiddenSize
        config.depth = depth ?? config.depth
        config.numHeads = numHeads ?? config.numHeads
        config.patchSize = patchSize ?? config.patchSize
        config.mlpRatio = mlpRatio ?? config.mlpRatio
        (config.inChannels, config.outChannels, config.conditioning) = (channels, outChannels, conditioning)
        try config.validate()
        return config
    }

    /// Whether --model names a Latte video model rather than a DiT.
    var isLatte: Bool { PixArtConfig.latteNames.contains(model) }

    /// The Latte config of --model at latent size `latentSize`, with the overrides applied.
    func latteConfig(latentSize: Int) throws -> PixArtConfig {
        var config = try PixArtConfig.latte(model, sampleSize: latentSize)
        config.hiddenSize = hiddenSize ?? config.hiddenSize
        config.depth = depth ?? config.depth
        config.numHeads = numHeads ?? config.numHeads
        config.patchSize = patchSize ?? config.patchSize
        config.mlpHidden = mlpRatio.map { Int($0 * Double(config.hiddenSize)) } ?? 4 * config.hiddenSize
        try config.validate()
        return config
    }
}

/// Opens `--data`: `synthetic` (the bundled coloured shapes) or an image folder with one subfolder per class.
func openDataset(_ spec: String, imageSize: Int, seed: UInt64) throws -> any DataSource {
    if spec == "synthetic" { return SyntheticShapes(imageSize: imageSize, count: 50_000, seed: seed) }
    return try ImageFolderDataset(root: spec, imageSize: imageSize)
}

/// Parses `--class`: "all", one index, or a comma list.
func parseClasses(_ text: String, classCount: Int) throws -> [Int] {
    if text == "all" { return Array(0..<classCount) }
    let values = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
    guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else {
        throw ValidationError("--class '\(text)' must be 'all', a class index or a comma-separated list of indices")
    }
    let classes = values.map { $0! }
    if let bad = classes.first(where: { $0 < 0 || $0 >= classCount }) {
        throw ValidationError("--class \(bad) is out of range: the model has classes 0..<\(classCount)")
    }
    return classes
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// `--conditioning adaln-zero|cross-attention|in-context`: parsed, listed in --help and refused with the valid
/// values by the argument parser itself.
extension VideoDiTConfig.Conditioning: ExpressibleByArgument {}
