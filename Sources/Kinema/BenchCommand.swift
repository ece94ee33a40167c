import ArgumentParser
import Foundation
import KinemaCUDA
import KinemaModels
import KinemaTrain

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time DiT training or sampling steps on random inputs and report images/s, tokens/s, TFLOP/s, MFU "
            + "and peak memory.",
        discussion: """
        MODE is train (forward, DiT's loss, backward, AdamW) or sample (one guided step: a forward of the doubled
        batch). --image-size is in pixels: the model sees 4-channel latents of a side 8 times smaller, as DiT does.
        FLOPs are counted as DESIGN.md says (2 per multiply-add, training = 3 × forward); MFU is against
        --peak-tflops (default: H100 SXM dense bf16, 989). Warm-up steps are excluded; the median step is reported.
        """)

    @Argument(help: "train or sample") var mode: String
    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Image side in pixels (latents are 8× smaller).") var imageSize = 256
    @Option(help: "Images per step.") var batchSize = 64
    @Option(help: "Timed steps.") var steps = 10
    @Option(help: "Untimed warm-up steps.") var warmup = 3
    @Option(help: "Peak TFLOP/s for MFU.") var peakTflops = 989.0
    @Option(help: "Write the result as JSON to this file too.") var json: String?
    @OptionGroup var deviceOptions: DeviceOptions

    func run() throws {
        guard mode == "train" || mode == "sample" else { throw ValidationError("bench mode '\(mode)': use train or sample") }
        guard imageSize % 8 == 0, batchSize >= 1, steps >= 1, warmup >= 0 else {
            throw ValidationError("--image-size must be a multiple of 8, --batch-size and --steps at least 1")
        }
        let backend = try deviceOptions.backend()
        let model = modelOptions.model
        let config = try modelOptions.config(imageSize: imageSize / 8, channels: 4, classes: 1000)
        let dit = try DiT(config: config, backend: backend, dtype: try deviceOptions.dtype())
        let peakMemory: (() -> Int)? = (backend as? CUDABackend).map { gpu in { gpu.peakMemory } }
        let result = mode == "train"
            ? Benchmark.train(model: dit, name: model, batchSize: batchSize, steps: steps, warmup: warmup,
                              peakTeraflops: peakTflops, peakMemory: peakMemory)
            : Benchmark.sample(model: dit, name: model, batchSize: batchSize, steps: steps, warmup: warmup,
                               peakTeraflops: peakTflops, peakMemory: peakMemory)
        print(String(format: "bench %@ %@ %d px batch %d on %@ (%@): step %.1f ms, %.1f images/s, %.0f tokens/s, "
                     + "%.1f TFLOP/s, MFU %.1f%%%@", mode, model, imageSize, batchSize, backend.name,
                     deviceOptions.precision, result.medianStepSeconds * 1000, result.imagesPerSecond,
                     result.tokensPerSecond, result.teraflopsPerSecond, result.mfu * 100,
                     result.peakMemoryBytes.map { String(format: ", peak memory %.2f GiB", Double($0) / 1_073_741_824) } ?? ""))
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(result).write(to: URL(fileURLWithPath: json))
        }
    }
}
