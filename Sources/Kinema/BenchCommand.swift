import ArgumentParser
import Foundation
import KinemaCUDA
import KinemaModels
import KinemaTensor
import KinemaTrain

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time DiT training steps or guided sampler runs on random inputs and report images/s, tokens/s, "
            + "TFLOP/s, MFU and peak memory.",
        discussion: """
        MODE train times the device work of one `kinema train` step on random images: upload, noising, forward, \
        DiT's hybrid loss, backward, gradient-norm clipping (--max-grad-norm, 1 as `kinema train`; 0 leaves out \
        the norm, as DiT's own step and scripts/pytorch_reference.py do), AdamW and EMA. MODE sample times one whole \
        `kinema sample` run: --sampling-steps DDIM steps with classifier-free guidance at --cfg-scale (each step one \
        forward of the doubled batch), from noise to samples. --image-size is in pixels: the model sees 4-channel \
        latents of a side 8 times smaller, as DiT does.

        With a Latte model (--model Latte-XL/2 …) MODE train times a text-to-video step: --num-frames latent frames \
        of the --image-size video, random T5-sized caption states (4096 wide) of --caption-length tokens whose last \
        quarter is padding, the rectified-flow loss; a sample is one video of frames × (side/16)² tokens.

        Each timed step is measured on the device (CUDA events on the backend's stream between steps queued back \
        to back, waited for once at the end, as a training loop runs; wall clock on the CPU); warm-up is \
        excluded and the median is reported. FLOPs are counted as DESIGN.md says (2 per multiply-add, \
        training = 3 × forward); MFU is against --peak-tflops (default: H100 SXM dense bf16, 989). On CUDA the \
        command fails if the caching allocator asks the driver for memory during the timed steps.
        """)

    @Argument(help: "train or sample") var mode: String
    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Image side in pixels (latents are 8× smaller).") var imageSize = 256
    @Option(help: "Images (videos for Latte) per step (default: 64 for train, 8 for sample, 2 for Latte).")
    var batchSize: Int?
    @Option(help: "Frames per video (Latte).") var numFrames = 16
    @Option(help: "Caption tokens per video (Latte).") var captionLength = 120
    @Option(help: "Timed steps (train) or sampler runs (sample); default 10 and 5.") var steps: Int?
    @Option(help: "Untimed warm-up steps or runs; default 3 and 1.") var warmup: Int?
    @Option(help: "DDIM steps per sampler run (sample).") var samplingSteps = 50
    @Option(help: "Classifier-free guidance scale (sample; 1: no guidance, one forward per step).") var cfgScale = 4.0
    @Option(help: "Peak TFLOP/s for MFU.") var peakTflops = 989.0
    @Option(help: "Clip the global gradient norm to this in train mode, as `kinema train` does (0: no norm, no clipping).")
    var maxGradNorm = 1.0
    @Flag(help: "After the benchmark, run and print a per-kernel time profile of its steps (CUDA; events around every launch and all work on one stream, so the profiled steps are not the timed ones).")
    var profile = false
    @Flag(help: "Print the result as one JSON line on stdout (the human-readable line goes to stderr).")
    var json = false
    @OptionGroup var deviceOptions: DeviceOptions

    func run() throws {
        guard mode == "train" || mode == "sample" else { throw ValidationError("bench mode '\(mode)': use train or sample") }
        let training = mode == "train"
        let batchSize = self.batchSize ?? (modelOptions.isLatte ? 2 : training ? 64 : 8)
        let steps = self.steps ?? (training ? 10 : 5), warmup = self.warmup ?? (training ? 3 : 1)
        guard imageSize % 8 == 0, batchSize >= 1, steps >= 1, warmup >= 0 else {
            throw ValidationError("--image-size must be a multiple of 8, --batch-size and --steps at least 1, "
                + "--warmup at least 0")
        }
        guard maxGradNorm >= 0 else { throw ValidationError("--max-grad-norm must be at least 0 (0: no clipping)") }
        guard (1...1000).contains(samplingSteps), cfgScale >= 1 else {
            throw ValidationError("--sampling-steps must be in 1...1000 and --cfg-scale at least 1")
        }
        guard numFrames >= 1, captionLength >= 1 else {
            throw ValidationError("--num-frames and --caption-length must be at least 1")
        }
        guard training || !modelOptions.isLatte else {
            throw ValidationError("bench sample runs DiT models; time Latte with `bench train`")
        }
        let backend = try deviceOptions.backend()
        let gpu = backend as? CUDABackend
        let device = BenchmarkDevice(peakTeraflops: peakTflops, peakMemory: gpu.map { gpu in { gpu.peakMemory } },
                                     deviceAllocations: gpu.map { gpu in { gpu.deviceAllocationCount } },
                                     hostWaitSeconds: gpu.map { gpu in { gpu.hostWaitSeconds } })
        let run = try makeRun(backend: backend, batchSize: batchSize, training: training, device: device)
        let result = try run(steps, warmup)
        if profile, let gpu {
            // In order on one stream: a kernel's time between its events would otherwise include the share of the
            // GPU that work running beside it took (CUDABackend.concurrently).
            let concurrent = gpu.runsConcurrently
            gpu.runsConcurrently = false
            gpu.startProfiling()
            _ = try run(training ? 3 : 1, 0)
            printError(gpu.profiler!.report(steps: training ? 3 : samplingSteps))
            gpu.profiler = nil
            gpu.runsConcurrently = concurrent
        }
        let line = Self.describe(result, imageSize: imageSize)
        if json {
            printError(line)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
        } else {
            print(line)
        }
        if let grown = result.deviceAllocationsDuringTimedSteps, grown > 0 {
            printError("FAILED: the caching allocator made \(grown) new device allocations during the timed steps "
                + "(after \(result.deviceAllocationsWarm ?? 0) in set-up and warm-up): the steady state is not warm. "
                + "Raise --warmup, or find the allocation whose size changes between steps.")
            throw ExitCode.failure
        }
    }

    /// The benchmark of --model and MODE as a function of (timed steps, warm-up steps), so the profile reruns it.
    func makeRun(backend: any Backend, batchSize: Int, training: Bool,
                 device: BenchmarkDevice) throws -> (Int, Int) throws -> BenchmarkResult {
        let name = modelOptions.model, dtype = try deviceOptions.dtype(), latentSize = imageSize / 8
        if modelOptions.isLatte {
            let config = try modelOptions.latteConfig(latentSize: latentSize)
            let latte = try Latte(config: config, videoLength: numFrames, backend: backend, dtype: dtype)
            return { steps, warmup in
                Benchmark.trainLatte(model: latte, name: name, batchSize: batchSize, frames: numFrames,
                                     latentSize: latentSize, captionLength: captionLength, steps: steps,
                                     warmup: warmup, maxGradNorm: maxGradNorm, device: device)
            }
        }
        let config = try modelOptions.config(imageSize: latentSize, channels: 4, classes: 1000)
        let dit = try DiT(config: config, backend: backend, dtype: dtype)
        return { steps, warmup in
            training
                ? Benchmark.train(model: dit, name: name, batchSize: batchSize, steps: steps, warmup: warmup,
                                  maxGradNorm: maxGradNorm, device: device)
                : try Benchmark.sample(model: dit, name: name, batchSize: batchSize, samplingSteps: samplingSteps,
                                       cfgScale: cfgScale, steps: steps, warmup: warmup, device: device)
        }
    }

    static func describe(_ result: BenchmarkResult, imageSize: Int) -> String {
        let step: String
        if let samplingSteps = result.samplingSteps {
            step = String(format: "%.3f s per %d-step run (%.1f ms per step, cfg %g)", result.medianStepSeconds,
                          samplingSteps, result.medianStepSeconds * 1000 / Double(samplingSteps), result.cfgScale ?? 1)
        } else {
            step = String(format: "step %.1f ms (host busy %.1f ms)", result.medianStepSeconds * 1000,
                          (result.medianHostSeconds ?? .nan) * 1000)
        }
        let samples = PixArtConfig.latteNames.contains(result.model) ? "videos" : "images"
        var line = String(format: "bench %@ %@ %d px batch %d %@ on %@: %@, %.2f %@/s, %.0f tokens/s, %.2f TFLOP/s, "
                          + "MFU %.2f%%", result.mode, result.model, imageSize, result.batchSize, result.dtype,
                          result.device, step, result.imagesPerSecond, samples, result.tokensPerSecond,
                          result.teraflopsPerSecond, result.mfu * 100)
        if let peak = result.peakMemoryBytes { line += String(format: ", peak memory %.2f GiB", Double(peak) / 1_073_741_824) }
        if let warm = result.deviceAllocationsWarm {
            line += ", device allocations \(warm) warm, +\(result.deviceAllocationsDuringTimedSteps ?? 0) in timed steps"
        }
        return line + " (median of \(result.timedSteps), \(result.warmupSteps) warm-up)"
    }
}
