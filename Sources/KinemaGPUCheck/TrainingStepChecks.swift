import KinemaDiffusion
import KinemaModels
import KinemaNN
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
            loadSameRandomWeights(cpuModel.parameters, gpuModel.parameters, dtype: dtype)
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
            compareGradients(name, cpuModel.parameters, gpuModel.parameters, tolerance: tolerance)
        } catch {
            record(name, false, "\(error)")
        }
    }

    /// One PixArt or video-model training step with the rectified-flow loss (logit-normal timesteps shifted for the
    /// size, the velocity target) on the GPU against the CPU, on a latent grid other than the training one and
    /// captions with padding: loss, output and every parameter's gradient.
    /// `model`: PixArt on [B, C, H, W], or a video model on [B, C, F, H, W] of `model.frames` frames.
    func checkTextTransformerTrainingStep(_ name: String, config: PixArtConfig, model: TextTransformer.Kind = .pixArt,
                                          batch: Int, height: Int, width: Int, captionLength: Int, dtype: DType = .f32,
                                          tolerance: Double = 1e-4) {
        let frames = model.frames
        do {
            let cpuModel = try TextTransformer(model, config: config, backend: cpu, dtype: .f32)
            let gpuModel = try TextTransformer(model, config: config, backend: gpu, dtype: dtype)
            loadSameRandomWeights(cpuModel.parameters, gpuModel.parameters, dtype: dtype)
            let shape = [batch, config.inChannels] + (frames.map { [$0] } ?? []) + [height, width]
            let (xStart, gxStart) = pair(shape)
            let (noise, gNoise) = pair(shape)
            let (captions, gCaptions) = pair([batch, captionLength, config.captionChannels])
            let maskValues = (0..<batch).flatMap { b in (0..<captionLength).map { Int32($0 < captionLength - b ? 1 : 0) } }
            let flow = RectifiedFlow()
            var random = RandomStream(seed: 5)
            let timesteps = flow.sampleTimesteps(batch: batch, size: .init(height: 8 * height, width: 8 * width, frames: 1),
                                                 random: &random)

            func step(_ model: TextTransformer, _ x0: Tensor, _ eps: Tensor, _ text: Tensor) -> (loss: Double, out: Tensor) {
                let backend = model.backend
                let xT = flow.interpolate(x0, noise: eps, timesteps: timesteps, backend: backend)
                model.zeroGradients()
                let out = model.trainingStep(xT, timesteps: backend.upload(timesteps, shape: [batch], dtype: .f32),
                                             captions: text,
                                             captionMask: backend.upload(maskValues, shape: [batch, captionLength])) {
                    let loss = flow.trainingLoss(modelOutput: $0, xStart: x0, noise: eps, backend: backend)
                    return (loss.loss, loss.gradient)
                }
                return out
            }
            let (cpuLoss, cpuOut) = step(cpuModel, xStart, noise, captions)
            let (gpuLoss, gpuOut) = step(gpuModel, gxStart, gNoise, gCaptions)
            let lossError = abs(gpuLoss - cpuLoss) / abs(cpuLoss)
            record("\(name) loss", lossError <= tolerance, "CPU \(cpuLoss) GPU \(gpuLoss) relative error \(lossError)")
            check("\(name) output", gpu.download(gpuOut), cpu.download(cpuOut), tolerance: tolerance)
            // A key bias's gradient is zero in exact arithmetic (the softmax cancels it): rounding noise on both sides.
            let keyBias = { (p: Parameter) in ["to_k.bias", ".k.bias", "k_linear.bias"].contains { p.name.hasSuffix($0) } }
            compareGradients(name, cpuModel.parameters.filter { !keyBias($0) }, gpuModel.parameters.filter { !keyBias($0) },
                             tolerance: tolerance)
        } catch {
            record(name, false, "\(error)")
        }
    }

    /// The same random weights (N(0, 0.05²)) on both models. The bf16 model's master holds the values rounded to
    /// bf16, as the f32 CPU model's weights do, so the two differ only in the precision they compute in.
    func loadSameRandomWeights(_ cpuParameters: [Parameter], _ gpuParameters: [Parameter], dtype: DType) {
        for (c, g) in zip(cpuParameters, gpuParameters) {
            var (values, _) = pair(c.value.shape, scale: 0.05)
            if dtype != .f32 { values = cpu.cast(cpu.cast(values, to: dtype), to: .f32) }
            c.load(values, backend: cpu)
            g.load(gpu.upload(cpu.download(values), shape: values.shape, dtype: .f32), backend: gpu)
        }
    }

    /// Records the worst relative error (max |Δ| / max |reference| per tensor) over every parameter's gradient.
    private func compareGradients(_ name: String, _ cpuParameters: [Parameter], _ gpuParameters: [Parameter],
                                  tolerance: Double) {
        var worst = (error: 0.0, name: "")
        for (c, g) in zip(cpuParameters, gpuParameters) {
            let reference = cpu.download(c.gradient), ours = gpu.download(g.gradient)
            var difference = 0.0, scale = 1e-30
            for (a, b) in zip(ours, reference) {
                difference = max(difference, abs(Double(a) - Double(b)))
                scale = max(scale, abs(Double(b)))
            }
            if !(difference / scale <= worst.error) { worst = (difference / scale, c.name) }
        }
        record("\(name) every gradient (\(cpuParameters.count) tensors)", worst.error <= tolerance,
               String(format: "worst relative error %.2e in %@", worst.error, worst.name))
    }
}

/// The text-conditioned models of the training-step checks: PixArt (images), or a video model.
struct TextTransformer {
    enum Kind {
        case pixArt
        case latte(frames: Int)
        case stdit(frames: Int)
        /// A video DiT of the config's widths with 2-frame patches and the given conditioning.
        case videoDiT(frames: Int, VideoDiTConfig.Conditioning)

        /// The clips' frame count; nil for PixArt's images.
        var frames: Int? {
            switch self {
            case .pixArt: nil
            case .latte(let frames), .stdit(let frames), .videoDiT(let frames, _): frames
            }
        }
    }

    let pixArt: PixArt?, video: (any TextConditionedVideoModel)?

    init(_ kind: Kind, config: PixArtConfig, backend: any Backend, dtype: DType) throws {
        switch kind {
        case .pixArt:
            (pixArt, video) = (try PixArt(config: config, backend: backend, dtype: dtype), nil)
        case .latte(let frames):
            (pixArt, video) = (nil, try Latte(config: config, videoLength: frames, backend: backend, dtype: dtype))
        case .stdit:
            (pixArt, video) = (nil, try STDiT(config: config, timeScale: 1, backend: backend, dtype: dtype))
        case .videoDiT(_, let conditioning):
            let videoConfig = VideoDiTConfig(patchSize: config.patchSize, temporalPatch: 2, inChannels: config.inChannels,
                                             outChannels: config.outChannels, hiddenSize: config.hiddenSize,
                                             depth: config.depth, numHeads: config.numHeads,
                                             captionChannels: config.captionChannels, conditioning: conditioning)
            (pixArt, video) = (nil, try VideoDiT(config: videoConfig, backend: backend, dtype: dtype))
        }
    }

    var backend: any Backend { pixArt?.backend ?? video!.backend }
    var parameters: [Parameter] { pixArt?.parameters ?? video!.arena.parameters }
    func zeroGradients() { pixArt?.zeroGradients() ?? video!.arena.zeroGradients() }

    /// Forward, the loss (given the output: value and gradient), backward; returns the loss and the output.
    func trainingStep(_ x: Tensor, timesteps: Tensor, captions: Tensor, captionMask: Tensor?,
                      loss: (Tensor) -> (Double, Tensor)) -> (loss: Double, out: Tensor) {
        if let pixArt {
            let (out, cache) = pixArt.forward(x, timesteps: timesteps, captions: captions, captionMask: captionMask)
            let (value, gradient) = loss(out)
            pixArt.backward(gradient, cache)
            return (value, out)
        }
        return video!.trainingStep(x, timesteps: timesteps, captions: captions, captionMask: captionMask, loss: loss)
    }
}
