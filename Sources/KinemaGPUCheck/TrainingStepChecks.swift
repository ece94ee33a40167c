import KinemaDiffusion
import KinemaModels
import KinemaTensor

extension GPUCheck {
    /// One whole DiT training step (forward, DiT's hybrid loss, backward) on the GPU against the CPU: loss, output
    /// and every parameter's gradient. Weights are random (the paper's zero initialisation would leave most
    /// gradients zero) and identical on both backends, as are the inputs and the noise. With `dtype` bf16 the GPU
    /// model computes in bf16 (weights rounded to bf16 on both sides) against the CPU in f32.
    func checkDiTTrainingStep(_ name: String, config: DiTConfig, batch: Int, dtype: DType = .f32,
                              tolerance: Double = 1e-4) {
        do {
            let cpuModel = try DiT(config: config, backend: cpu)
            let gpuModel = try DiT(config: config, backend: gpu, dtype: dtype)
            for (c, g) in zip(cpuModel.parameters, gpuModel.parameters) {
                var (values, _) = pair(c.value.shape, scale: 0.05)
                // The bf16 model's master holds the same values rounded to bf16 as the f32 CPU model's weights,
                // so the two differ only in the precision they compute in.
                if dtype != .f32 { values = cpu.cast(cpu.cast(values, to: dtype), to: .f32) }
                c.load(values, backend: cpu)
                g.load(gpu.upload(cpu.download(values), shape: values.shape, dtype: .f32), backend: gpu)
            }
            let side = config.inputSize, channels = config.inChannels
            let (xStart, gxStart) = pair([batch, channels, side, side])
            let (noise, gNoise) = pair([batch, channels, side, side])
            let timesteps = (0..<batch).map { [0, 17, 500, 999][$0 % 4] }
            let labels = (0..<batch).map { Int32($0 % (config.numClasses + 1)) }  // includes the null class
            let diffusion = GaussianDiffusion(learnSigma: config.learnSigma)

            func step(_ model: DiT, _ x0: Tensor, _ eps: Tensor) -> (loss: Double, out: Tensor) {
                let backend = model.backend
                let xT = diffusion.qSample(x0, timesteps: timesteps, noise: eps, backend: backend)
                model.zeroGradients()
                let (out, cache) = model.forward(xT, timesteps: backend.upload(timesteps.map(Float.init),
                                                                                shape: [batch], dtype: .f32),
                                                 labels: backend.upload(labels, shape: [batch]))
                let loss = diffusion.trainingLoss(modelOutput: out, xStart: x0, xT: xT, noise: eps,
                                                  timesteps: timesteps, backend: backend)
                model.backward(loss.gradient, cache)
                return (loss.loss, out)
            }
            let (cpuLoss, cpuOut) = step(cpuModel, xStart, noise)
            let (gpuLoss, gpuOut) = step(gpuModel, gxStart, gNoise)
            let lossError = abs(gpuLoss - cpuLoss) / abs(cpuLoss)
            record("\(name) loss", lossError <= tolerance, "CPU \(cpuLoss) GPU \(gpuLoss) relative error \(lossError)")
            check("\(name) output", gpu.download(gpuOut), cpu.download(cpuOut), tolerance: tolerance)
            var worst = (error: 0.0, name: "")
            for (c, g) in zip(cpuModel.parameters, gpuModel.parameters) {
                let reference = cpu.download(c.gradient), ours = gpu.download(g.gradient)
                var difference = 0.0, scale = 1e-30
                for (a, b) in zip(ours, reference) {
                    difference = max(difference, abs(Double(a) - Double(b)))
                    scale = max(scale, abs(Double(b)))
                }
                if !(difference / scale <= worst.error) { worst = (difference / scale, c.name) }
            }
            record("\(name) every gradient (\(cpuModel.parameters.count) tensors)", worst.error <= tolerance,
                   String(format: "worst relative error %.2e in %@", worst.error, worst.name))
        } catch {
            record(name, false, "\(error)")
        }
    }
}
