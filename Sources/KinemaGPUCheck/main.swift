import Foundation
import KinemaCUDA
import KinemaModels

// Every CUDA op against the CPU backend on fresh random inputs of several sizes (including sizes that are no
// multiple of a block), with outputs poisoned so an unwritten element fails. Prints one line per check and
// "N passed, M failed"; exits 1 on any failure, 2 without a GPU. Run on a GPU machine by scripts/gpu-check.

// `--compile-only`: compile every kernel file with NVRTC for sm_90, no GPU needed (libnvrtc on the library path).
if CommandLine.arguments.contains("--compile-only") {
    let cache = FileManager.default.temporaryDirectory.appendingPathComponent("kinema-compile-check-\(getpid())")
    defer { try? FileManager.default.removeItem(at: cache) }
    do {
        let failures = try CUDABackend.compileAllKernels(architecture: 90, cacheDirectory: cache)
        for failure in failures { print("FAIL \(failure.file)\n\(failure.log)") }
        print(failures.isEmpty ? "all kernel files compile for sm_90" : "\(failures.count) kernel files failed")
        exit(failures.isEmpty ? 0 : 1)
    } catch {
        print("cannot compile: \(error)")
        exit(2)
    }
}

// `--resources FILE`: ptxas's registers / spills / shared memory for each kernel of Kernels/FILE.cu, no GPU needed.
if let index = CommandLine.arguments.firstIndex(of: "--resources"), index + 1 < CommandLine.arguments.count {
    do {
        print(try CUDABackend.kernelResources(file: CommandLine.arguments[index + 1]))
        exit(0)
    } catch {
        print("cannot compile: \(error)")
        exit(2)
    }
}

let gpu: CUDABackend
do {
    gpu = try CUDABackend(index: 0)
} catch {
    print("no GPU: \(error)")
    exit(2)
}
gpu.poisonsNewTensors = true  // every output starts as NaN: an element a kernel skips cannot pass
print("device: \(gpu.name)")

let harness = GPUCheck(gpu: gpu)
// `--only FAMILY` (memory, linear-algebra, hopper-matmul, training, nn, mixed-precision, attention, attention-speed
// (the flash timings alone), dit, vae, text, pixart) runs one family; the default runs all.
let families: [(name: String, run: () -> Void)] = [
    ("memory", harness.checkMemoryAndElementwise),
    ("linear-algebra", harness.checkLinearAlgebra),
    ("hopper-matmul", harness.checkHopperMatmul),
    ("training", harness.checkTraining),
    ("nn", harness.checkNN),
    ("mixed-precision", harness.checkMixedPrecision),
    ("attention", harness.checkAttention),
    ("attention-speed", { harness.checkAndTimeFlashAttention(checks: false) }),
    ("dit", {
        harness.checkDiTTrainingStep("DiT tiny step", config: DiTConfig(inputSize: 8, patchSize: 2, hiddenSize: 64,
                                                                        depth: 2, numHeads: 4, numClasses: 10), batch: 4)
        harness.checkDiTTrainingStep("DiT-S/2 step (256 px latents)", config: try! DiTConfig.named("DiT-S/2"), batch: 2)
        harness.checkDiTTrainingStep("DiT-S/2 step bf16 vs CPU f32", config: try! DiTConfig.named("DiT-S/2"), batch: 2,
                                     dtype: .bf16, tolerance: 3e-2)
    }),
    ("vae", harness.checkVAE),
    ("text", harness.checkTextEncoders),
    ("pixart", {
        let tiny = PixArtConfig(sampleSize: 8, hiddenSize: 64, depth: 2, numHeads: 4, captionChannels: 40)
        harness.checkTextTransformerTrainingStep("PixArt tiny step (6 x 10 latents)", config: tiny, batch: 3,
                                                 height: 6, width: 10, captionLength: 7)
        harness.checkTextTransformerTrainingStep("Latte tiny step (4 frames of 6 x 10)", config: tiny,
                                                 model: .latte(frames: 4), batch: 2, height: 6, width: 10,
                                                 captionLength: 7)
        let small = PixArtConfig(sampleSize: 32, hiddenSize: 384, depth: 2, numHeads: 6, captionChannels: 512)
        harness.checkTextTransformerTrainingStep("PixArt-S-like step bf16 vs CPU f32", config: small, batch: 2,
                                                 height: 32, width: 32, captionLength: 20, dtype: .bf16,
                                                 tolerance: 3e-2)
        harness.checkTextTransformerTrainingStep("Latte-S-like step bf16 vs CPU f32 (8 frames)", config: small,
                                                 model: .latte(frames: 8), batch: 1, height: 16, width: 16,
                                                 captionLength: 20, dtype: .bf16, tolerance: 3e-2)
        for conditioning in VideoDiTConfig.Conditioning.allCases {
            harness.checkTextTransformerTrainingStep("video DiT \(conditioning.rawValue) tiny step (4 frames of 6 x 10)",
                                                     config: tiny, model: .videoDiT(frames: 4, conditioning), batch: 2,
                                                     height: 6, width: 10, captionLength: 7)
            harness.checkTextTransformerTrainingStep("video DiT \(conditioning.rawValue) S-like step bf16 vs CPU f32",
                                                     config: small, model: .videoDiT(frames: 8, conditioning), batch: 1,
                                                     height: 16, width: 16, captionLength: 20, dtype: .bf16,
                                                     tolerance: 3e-2)
        }
        harness.checkTextTransformerTrainingStep("STDiT tiny step (4 frames of 6 x 10)", config: tiny,
                                                 model: .stdit(frames: 4), batch: 2, height: 6, width: 10,
                                                 captionLength: 7)
        // 5e-2: the worst gradient is the temporal attention's q or k weight (measured 3.2e-2 and 3.8e-2), small
        // beside the others because the attention over 8 frames is nearly uniform at these weights; the f32 step
        // agrees to 4e-6–7e-6.
        harness.checkTextTransformerTrainingStep("STDiT-S-like step bf16 vs CPU f32 (8 frames)", config: small,
                                                 model: .stdit(frames: 8), batch: 1, height: 16, width: 16,
                                                 captionLength: 20, dtype: .bf16, tolerance: 5e-2)
    }),
]
let arguments = CommandLine.arguments
let only = arguments.firstIndex(of: "--only").map { $0 + 1 < arguments.count ? arguments[$0 + 1] : "" }
if let only, !families.contains(where: { $0.name == only }) {
    print("--only \(only): unknown family; one of \(families.map(\.name).joined(separator: ", "))")
    exit(2)
}
for family in families where only == nil || family.name == only {
    harness.restartSeeds()
    family.run()
}

print("\(harness.passed) passed, \(harness.failed) failed")
exit(harness.failed == 0 ? 0 : 1)
