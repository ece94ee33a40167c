import Foundation
import KinemaTensor

extension GPUCheck {
    /// Kinema's own Hopper products (sm_90) through the linear layer's forward (plain, + bias, GELU keeping its
    /// input) and input gradient (plain, × GELU′, each with the bias gradient summed on the way): against the CPU in
    /// f32 on the same bf16-rounded inputs, on shapes that fill no 128 × 192 tile exactly; then on DiT-XL/2's shapes
    /// (16 384 tokens) against cuBLASLt, each timed beside it.
    func checkHopperMatmul() {
        guard gpu.supportsHopperMatmul else {
            print("SKIP Hopper products: not an sm_90 GPU with cuTensorMapEncodeTiled")
            return
        }
        let (minimum, uses) = (gpu.hopperMatmulMinimumOutputs, gpu.usesHopperMatmul)
        (gpu.hopperMatmulMinimumOutputs, gpu.usesHopperMatmul) = (0, true)
        defer { (gpu.hopperMatmulMinimumOutputs, gpu.usesHopperMatmul) = (minimum, uses) }
        for (m, n, k) in [(1000, 200, 72), (130, 8, 8), (300, 392, 1000), (512, 1152, 4608), (256, 4608, 1152)] {
            let tag = "[\(m), \(k)] → \(n)"
            let (x, gx) = pairBF16([m, k]), (w, gw) = pairBF16([n, k], scale: Float(1 / Double(k).squareRoot()))
            let (b, gb) = pairBF16([n])
            usedHopper("hopper x Wᵀ \(tag)") {
                check("hopper x Wᵀ \(tag)", gpu.download(gpu.linear(gx, weight: gw, bias: nil, gelu: false).y),
                      cpu.download(cpu.linear(x, weight: w, bias: nil, gelu: false).y), tolerance: 1e-2)
            }
            usedHopper("hopper x Wᵀ + b \(tag)") {
                check("hopper x Wᵀ + b \(tag)", gpu.download(gpu.linear(gx, weight: gw, bias: gb, gelu: false).y),
                      cpu.download(cpu.linear(x, weight: w, bias: b, gelu: false).y), tolerance: 1e-2)
            }
            usedHopper("hopper GELU(x Wᵀ + b) \(tag)") {
                let ours = gpu.linear(gx, weight: gw, bias: gb, gelu: true), reference = cpu.linear(x, weight: w, bias: b, gelu: true)
                check("hopper GELU(x Wᵀ + b) \(tag)", gpu.download(ours.y), cpu.download(reference.y), tolerance: 1e-2)
                check("hopper GELU's kept input \(tag)", gpu.download(ours.preActivation!),
                      cpu.download(reference.preActivation!), tolerance: 1e-2)
            }
            // The input gradient multiplies by the same weight untransposed: dy [m, n] W [n, k] → [m, k]; the bias
            // gradient (+= Σ dy over rows) adds to a vector that already holds values.
            let (dy, gdy) = pairBF16([m, n]), (z, gz) = pairBF16([m, k])
            for gelu in [false, true] {
                let name = "hopper dy W\(gelu ? " × GELU′(z)" : "") \(tag)"
                let (db, gdb) = pair([n])
                usedHopper(name) {
                    check(name, gpu.download(gpu.linearInputGradient(gdy, weight: gw, geluInput: gelu ? gz : nil, biasGradient: gdb)),
                          cpu.download(cpu.linearInputGradient(dy, weight: w, geluInput: gelu ? z : nil, biasGradient: db)),
                          tolerance: 1e-2)
                    check(name + ", its bias gradient", gpu.download(gdb), cpu.download(db), tolerance: 1e-5)
                }
            }
        }
        compareHopperWithCuBLAS()
    }

    /// Records a failure when `body` ran no Hopper kernel (the check would otherwise pass on cuBLASLt's result).
    private func usedHopper(_ name: String, _ body: () -> Void) {
        gpu.startProfiling()
        body()
        let report = gpu.profiler!.report(steps: 1)
        gpu.profiler = nil
        if !report.contains("hopper_matmul") { record(name + " (path)", false, "ran on cuBLASLt, not the Hopper kernel") }
    }

    /// DiT-XL/2's eight products of a block (16 384 tokens, width 1152, MLP 4608) with their epilogues, on the Hopper
    /// kernel and on cuBLASLt (with its separate bias-gradient column sums): the same results within bf16 rounding,
    /// and each one's time (mean of 20 after 3). Leaves usesHopperMatmul off; checkHopperMatmul restores it.
    private func compareHopperWithCuBLAS() {
        let poisons = gpu.poisonsNewTensors
        gpu.poisonsNewTensors = false
        defer { gpu.poisonsNewTensors = poisons }
        let tokens = 16_384, gpu = self.gpu
        func input(_ shape: [Int], scale: Double = 1) -> Tensor {
            gpu.cast(gpu.affine(gpu.randomNormal(shape, dtype: .f32, seed: UInt64(shape.reduce(0, +)), offset: 0),
                                scale: scale, shift: 0), to: .bf16)
        }
        // (name, input width, output width, GELU after it): forward x Wᵀ + b; input gradient dy W with db (× GELU′
        // for fc2, whose input is fc1's GELU).
        let layers: [(String, Int, Int, Bool)] = [("qkv", 1152, 3456, false), ("proj", 1152, 1152, false),
                                                  ("fc1", 1152, 4608, true), ("fc2", 4608, 1152, false)]
        for (layer, inWidth, outWidth, gelu) in layers {
            let x = input([tokens, inWidth]), w = input([outWidth, inWidth], scale: 1 / Double(inWidth).squareRoot())
            let bias = input([outWidth]), dy = input([tokens, outWidth]), z = input([tokens, inWidth])
            let biasGradient = gpu.zeros([outWidth], dtype: .f32)
            let flops = 2 * Double(tokens * inWidth * outWidth)
            let runs: [(String, () -> [Tensor])] = [
                ("forward\(gelu ? " GELU" : "")", {
                    let out = gpu.linear(x, weight: w, bias: bias, gelu: gelu)
                    return [out.y] + (out.preActivation.map { [$0] } ?? [])
                }),
                ("input gradient\(layer == "fc2" ? " × GELU′" : "") + db", {
                    gpu.fill(biasGradient, with: 0)
                    return [gpu.linearInputGradient(dy, weight: w, geluInput: layer == "fc2" ? z : nil,
                                                    biasGradient: biasGradient), biasGradient]
                }),
            ]
            for (what, run) in runs {
                var results: [[Float]] = [], milliseconds: [Double] = []
                for hopper in [true, false] {
                    gpu.usesHopperMatmul = hopper
                    results.append(run().flatMap { gpu.download($0) })
                    for _ in 0..<3 { _ = run() }
                    milliseconds.append(gpu.measureSeconds { for _ in 0..<20 { _ = run() } } * 1000 / 20)
                }
                check("hopper = cuBLASLt, \(layer) \(what)", results[0], results[1], tolerance: 1e-2)
                print(String(format: "TIME \(layer) \(what) [%d × %d × %d]: hopper %.3f ms (%.0f TFLOP/s), cuBLASLt %.3f ms (%.0f TFLOP/s)",
                             tokens, outWidth, inWidth, milliseconds[0], flops / milliseconds[0] / 1e9,
                             milliseconds[1], flops / milliseconds[1] / 1e9))
            }
        }
    }
}
