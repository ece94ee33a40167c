import Foundation
import KinemaTensor

extension GPUCheck {
    /// The optimizer (OptimizerChecks.swift), random and diffusion-loss families against the CPU backend.
    func checkTraining() {
        checkOptimizer()
        checkRandom()
        checkDiffusion()
    }

    /// The same values on both backends, made from `values` on the host.
    private func both(_ values: [Float], _ shape: [Int]) -> (cpu: Tensor, gpu: Tensor) {
        (cpu.upload(values, shape: shape, dtype: .f32), gpu.upload(values, shape: shape, dtype: .f32))
    }

    private func checkRandom() {
        for count in [1, 5, 4099, 1_000_003] {
            for offset: UInt64 in [0, 12345] {
                let seed: UInt64 = 0x1234_5678_9ABC_DEF0 &+ UInt64(count)
                check("randomNormal n=\(count) offset=\(offset)",
                      gpu.download(gpu.randomNormal([count], dtype: .f32, seed: seed, offset: offset)),
                      cpu.download(cpu.randomNormal([count], dtype: .f32, seed: seed, offset: offset)), tolerance: 1e-5)
            }
        }
        for dtype in [DType.bf16, .f16, .f64] {
            check("randomNormal [7, 33] \(dtype)",
                  gpu.download(gpu.randomNormal([7, 33], dtype: dtype, seed: 99, offset: 5)),
                  cpu.download(cpu.randomNormal([7, 33], dtype: dtype, seed: 99, offset: 5)), tolerance: 1e-2)
        }
    }

    private func relativeCheck(_ name: String, _ ours: [Double], _ reference: [Double], tolerance: Double) {
        var worst = 0.0, ok = ours.count == reference.count
        for (a, b) in zip(ours, reference) {
            if !a.isFinite && b.isFinite { ok = false }
            worst = max(worst, abs(a - b) / max(abs(b), 1e-30))
        }
        record(name, ok && worst <= tolerance, String(format: "relative error %.2e (bound %.0e)", worst, tolerance))
    }

    /// A linear β schedule's coefficients at timestep t (IDDPM's formulas), t = 0 being the decoder step.
    private func coefficients(t: Int) -> VLBCoefficients {
        let steps = 1000
        let betas = (0..<steps).map { 1e-4 + (0.02 - 1e-4) * Double($0) / Double(steps - 1) }
        var alphaBar = [Double](), running = 1.0
        for b in betas { running *= 1 - b; alphaBar.append(running) }
        func previous(_ i: Int) -> Double { i == 0 ? 1 : alphaBar[i - 1] }
        func posteriorVariance(_ i: Int) -> Double { betas[i] * (1 - previous(i)) / (1 - alphaBar[i]) }
        let clipped = log(t == 0 ? posteriorVariance(1) : posteriorVariance(t))
        return VLBCoefficients(
            posteriorMeanCoef1: betas[t] * previous(t).squareRoot() / (1 - alphaBar[t]),
            posteriorMeanCoef2: (1 - previous(t)) * (1 - betas[t]).squareRoot() / (1 - alphaBar[t]),
            posteriorLogVariance: clipped, logBeta: log(betas[t]),
            sqrtRecipAlphaBar: (1 / alphaBar[t]).squareRoot(), sqrtRecipM1AlphaBar: (1 / alphaBar[t] - 1).squareRoot(),
            isFirstStep: t == 0)
    }

    private func checkDiffusion() {
        for shape in [[3, 4, 8, 8], [2, 3, 33, 17], [2, 4, 64, 70]] {
            let samples = shape[0]
            let weights = (0..<samples).map { 0.5 + Double($0) * 0.75 }
            let (p, gp) = pair(shape), (q, gq) = pair(shape)
            let (cpuLoss, cpuGradient) = cpu.meanSquaredError(p, target: q, weights: weights)
            let (gpuLoss, gpuGradient) = gpu.meanSquaredError(gp, target: gq, weights: weights)
            relativeCheck("meanSquaredError per-sample \(shape)", gpuLoss, cpuLoss, tolerance: 1e-5)
            check("meanSquaredError gradient \(shape)", gpu.download(gpuGradient), cpu.download(cpuGradient),
                  tolerance: 1e-5)

            // Inputs in their real ranges: x_0 in [-1, 1] with some at the edges, variance values in [-1, 1].
            let count = shape.reduce(1, *)
            let x0Values = cpu.download(pair(shape).cpu).map { min(max($0 * 0.6, -1), 1) }
            let vValues = cpu.download(pair(shape).cpu).map { Float(tanh(Double($0))) }
            let (x0, gx0) = both(x0Values, shape), (vv, gvv) = both(vValues, shape)
            let (eps, geps) = pair(shape), (noise, _) = pair(shape)
            precondition(x0Values.count == count)
            // x_t = √ᾱ x_0 + √(1−ᾱ) ε at each sample's t; t = 0 for the first sample exercises the decoder NLL.
            let timesteps = (0..<samples).map { [0, 500, 999, 37][$0 % 4] }
            let c = timesteps.map { coefficients(t: $0) }
            let n = cpu.download(noise), x = cpu.download(x0)
            let size = count / samples
            let xtValues = (0..<count).map { i -> Float in
                let k = c[i / size]
                let alphaBar = 1 / (k.sqrtRecipAlphaBar * k.sqrtRecipAlphaBar)
                return Float(alphaBar.squareRoot() * Double(x[i]) + (1 - alphaBar).squareRoot() * Double(n[i]))
            }
            let (xt, gxt) = both(xtValues, shape)
            // Without a mask, then with one that leaves out about a third of the elements (image-to-video's
            // conditioning frames).
            let (mask, gmask) = both((0..<count).map { Float(($0 * 7919) % 3 == 0 ? 0 : 1) }, shape)
            for (tag, masks) in [("", (cpu: nil, gpu: nil)), (" masked", (cpu: mask, gpu: gmask))]
                as [(String, (cpu: Tensor?, gpu: Tensor?))] {
                let (cpuBound, cpuBoundGradient) = cpu.variationalBound(epsilon: eps, varianceValues: vv, xStart: x0, xT: xt,
                                                                       coefficients: c, mask: masks.cpu, weights: weights)
                let (gpuBound, gpuBoundGradient) = gpu.variationalBound(epsilon: geps, varianceValues: gvv, xStart: gx0,
                                                                       xT: gxt, coefficients: c, mask: masks.gpu,
                                                                       weights: weights)
                relativeCheck("vb per-sample\(tag) \(shape) t \(timesteps)", gpuBound, cpuBound, tolerance: 1e-5)
                check("vb gradient\(tag) \(shape)", gpu.download(gpuBoundGradient),
                      cpu.download(cpuBoundGradient), tolerance: 1e-5)
                // The decoder sample alone, so its gradient is not hidden behind the other samples' scale.
                check("vb gradient\(tag) \(shape) t=0 sample", Array(gpu.download(gpuBoundGradient)[0..<size]),
                      Array(cpu.download(cpuBoundGradient)[0..<size]), tolerance: 1e-5)
            }
        }
    }
}
