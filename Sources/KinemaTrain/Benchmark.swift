import Dispatch
import KinemaDiffusion
import KinemaModels
import KinemaNN
import KinemaTensor

/// What `kinema bench` measured. For `train` a step is one optimisation step; for `sample` it is one whole sampler
/// run (`samplingSteps` guided DDIM steps). FLOPs are counted as ../shared/DESIGN.md says: a training step is 3×
/// the forward, a guided sampling step one forward of the doubled batch.
public struct BenchmarkResult: Codable, Sendable {
    public var mode: String
    public var model: String
    public var dtype: String
    public var device: String
    public var batchSize: Int
    public var tokensPerSample: Int
    /// Sampler steps per timed run (sample mode only) and the guidance scale it used.
    public var samplingSteps: Int?
    public var cfgScale: Double?
    public var timedSteps: Int
    public var warmupSteps: Int
    /// Median device time of one timed step (train) or one whole sampler run (sample).
    public var medianStepSeconds: Double
    /// The median host time spent queueing a step, waits for the device excluded (see `Benchmark.Timing`).
    public var medianHostSeconds: Double?
    public var imagesPerSecond: Double
    /// Tokens of the images trained on (train) or produced (sample) per second: images/s × tokens per sample.
    public var tokensPerSecond: Double
    public var teraflopsPerSecond: Double
    /// Counted FLOP/s over the device's peak (H100 SXM dense bf16: 989, as DESIGN.md counts MFU).
    public var mfu: Double
    public var peakMemoryBytes: Int?
    /// Device allocations the backend had made when the warm-up ended, and how many the timed steps added (a warm
    /// caching allocator adds none).
    public var deviceAllocationsWarm: Int?
    public var deviceAllocationsDuringTimedSteps: Int?
}

/// What the benchmark reads from the device beside the model: its peak for MFU, and (on CUDA) the allocator's
/// peak bytes and driver allocation count.
public struct BenchmarkDevice {
    public var peakTeraflops: Double
    public var peakMemory: (() -> Int)?
    public var deviceAllocations: (() -> Int)?
    /// Seconds the host has waited for the device so far (CUDABackend.hostWaitSeconds).
    public var hostWaitSeconds: (() -> Double)?

    public init(peakTeraflops: Double, peakMemory: (() -> Int)? = nil, deviceAllocations: (() -> Int)? = nil,
                hostWaitSeconds: (() -> Double)? = nil) {
        self.peakTeraflops = peakTeraflops
        self.peakMemory = peakMemory
        self.deviceAllocations = deviceAllocations
        self.hostWaitSeconds = hostWaitSeconds
    }
}

/// `kinema bench`: times DiT training steps or whole guided sampler runs on random inputs of the model's shape.
/// Each timed step is measured by the backend (`measureSeconds(repeating:)`: device events on CUDA, the steps
/// queued back to back with one wait at the end, as a training loop runs them); warm-up is excluded and the median
/// is reported.
public enum Benchmark {
    struct Timing {
        var medianSeconds: Double
        /// The median host time spent queueing a step, not counting waits for the device (downloads, syncs). With
        /// the steps queued back to back it includes launches blocked on the driver's full queue, so it comes near
        /// the device time whether the host keeps ahead or falls behind; the GPU's idle time in a kernel timeline
        /// (scripts/kernel_timeline.py) tells which.
        var medianHostSeconds: Double
        var allocationsWarm: Int?
        var allocationsDuringTimedSteps: Int?
    }

    static func time(steps: Int, warmup: Int, backend: any Backend, device: BenchmarkDevice,
                     _ body: () -> Void) -> Timing {
        for _ in 0..<warmup { body() }
        backend.synchronize()
        let warm = device.deviceAllocations?()
        var hostTimes: [Double] = []
        let times = backend.measureSeconds(repeating: steps) {
            let start = DispatchTime.now().uptimeNanoseconds, waited = device.hostWaitSeconds?() ?? 0
            body()
            hostTimes.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                             - ((device.hostWaitSeconds?() ?? 0) - waited))
        }
        let after = device.deviceAllocations?()
        return Timing(medianSeconds: times.sorted()[times.count / 2],
                      medianHostSeconds: hostTimes.sorted()[hostTimes.count / 2], allocationsWarm: warm,
                      allocationsDuringTimedSteps: after.flatMap { after in warm.map { after - $0 } })
    }

    /// The device work of `Trainer.trainStep` on random images: upload the batch and labels (with label dropout),
    /// noise it, zero the gradients, forward, DiT's hybrid loss, backward, clip the gradient norm (to `maxGradNorm`;
    /// 0: no norm, as DiT's step), AdamW, EMA.
    public static func train(model: DiT, name: String, batchSize: Int, steps: Int, warmup: Int, maxGradNorm: Double = 1,
                             device: BenchmarkDevice) -> BenchmarkResult {
        let backend = model.backend, config = model.config
        let shape = [batchSize, config.inChannels, config.inputSize, config.inputSize]
        let images = backend.download(backend.randomNormal(shape, dtype: .f32, seed: 1, offset: 0))
        let diffusion = GaussianDiffusion(schedule: .dit(), learnSigma: config.learnSigma)
        let optimizer = AdamW(arena: model.arena, hyperparameters: AdamWHyperparameters(learningRate: 1e-4))
        let ema = ExponentialMovingAverage(arena: model.arena, decay: 0.9999)
        var random = RandomStream(seed: 2)
        let timing = time(steps: steps, warmup: warmup, backend: backend, device: device) {
            let classes = (0..<batchSize).map { _ in Int32(random.nextInt(below: config.numClasses)) }
            let xStart = backend.upload(images, shape: shape, dtype: model.ioDType)
            let labels = backend.upload(model.dropLabels(classes, random: &random), shape: [batchSize])
            let (timesteps, noise, xT) = diffusion.noisedBatch(xStart, random: &random, backend: backend)
            let t = backend.upload(timesteps.map(Double.init), shape: [batchSize], dtype: model.ioDType)
            let (out, cache) = model.forward(xT, timesteps: t, labels: labels)
            let loss = diffusion.trainingLoss(modelOutput: out, xStart: xStart, xT: xT, noise: noise,
                                              timesteps: timesteps, backend: backend)
            model.backward(loss.gradient, cache)
            optimizer.update(learningRate: 1e-4, gradScale: gradientScale(model.arena, maxNorm: maxGradNorm), ema: ema)
        }
        return result("train", name, dtype: model.dtype, backend: backend, batch: batchSize,
                      tokensPerSample: config.tokenCount, timing, steps: steps, warmup: warmup,
                      flopsPerSample: 3 * config.forwardFLOPs, device: device)
    }

    /// One whole sampler run per timed step, through `ImageGenerator` as `kinema sample` runs it: `samplingSteps`
    /// DDIM steps (η = 0) with classifier-free guidance at `cfgScale` (each step one forward of the doubled batch,
    /// as DiT's forward_with_cfg), from fresh noise, for `batchSize` labels spread over the classes.
    public static func sample(model: DiT, name: String, batchSize: Int, samplingSteps: Int, cfgScale: Double,
                              steps: Int, warmup: Int, device: BenchmarkDevice) throws -> BenchmarkResult {
        let generator = ImageGenerator(model: model, sampler: .ddim, steps: samplingSteps, cfgScale: cfgScale)
        let labels = (0..<batchSize).map { ($0 * 7919) % model.config.numClasses }
        var failure: Error?
        var seed: UInt64 = 0
        let timing = time(steps: steps, warmup: warmup, backend: model.backend, device: device) {
            do { _ = try generator.generate(labels: labels, seed: seed) } catch { failure = error }
            seed += 1
        }
        if let failure { throw failure }
        let forwardsPerStep = cfgScale == 1 ? 1.0 : 2.0
        var result = result("sample", name, dtype: model.dtype, backend: model.backend, batch: batchSize,
                            tokensPerSample: model.config.tokenCount, timing, steps: steps, warmup: warmup,
                            flopsPerSample: Double(samplingSteps) * forwardsPerStep * model.config.forwardFLOPs,
                            device: device)
        result.samplingSteps = samplingSteps
        result.cfgScale = cfgScale
        return result
    }

    /// A Latte training step as `kinema train` on videos runs it, on random latents [B, 4, F, h, w] and random
    /// caption states [B, L, captionChannels] (the last quarter of every caption padding, masked): upload, the
    /// rectified-flow loss (logit-normal timesteps, shifted for the size), forward, backward, gradient-norm clipping,
    /// AdamW and EMA. A sample is one video; its tokens are F · (h/p) · (w/p).
    public static func trainLatte(model: Latte, name: String, batchSize: Int, frames: Int, latentSize: Int,
                                  captionLength: Int, steps: Int, warmup: Int, maxGradNorm: Double = 1,
                                  device: BenchmarkDevice) -> BenchmarkResult {
        let backend = model.backend, config = model.config
        let shape = [batchSize, config.inChannels, frames, latentSize, latentSize]
        let latents = backend.download(backend.randomNormal(shape, dtype: .f32, seed: 1, offset: 0))
        let captionShape = [batchSize, captionLength, config.captionChannels]
        let captions = backend.download(backend.randomNormal(captionShape, dtype: .f32, seed: 3, offset: 0))
        let real = captionLength - captionLength / 4
        let mask = (0..<batchSize * captionLength).map { Int32($0 % captionLength < real ? 1 : 0) }
        let flow = RectifiedFlow()
        let size = RectifiedFlow.InputSize(height: 8 * latentSize, width: 8 * latentSize, frames: frames)
        let optimizer = AdamW(arena: model.arena, hyperparameters: AdamWHyperparameters(learningRate: 1e-4))
        let ema = ExponentialMovingAverage(arena: model.arena, decay: 0.9999)
        var random = RandomStream(seed: 2)
        let timing = time(steps: steps, warmup: warmup, backend: backend, device: device) {
            let xStart = backend.upload(latents, shape: shape, dtype: model.ioDType)
            let text = backend.upload(captions, shape: captionShape, dtype: model.ioDType)
            let textMask = backend.upload(mask, shape: [batchSize, captionLength])
            let (timesteps, noise, xT) = flow.noisedBatch(xStart, size: size, random: &random, backend: backend)
            let t = backend.upload(timesteps, shape: [batchSize], dtype: model.ioDType)
            let (out, cache) = model.forward(xT, timesteps: t, captions: text, captionMask: textMask)
            let loss = flow.trainingLoss(modelOutput: out, xStart: xStart, noise: noise, backend: backend)
            model.backward(loss.gradient, cache)
            optimizer.update(learningRate: 1e-4, gradScale: gradientScale(model.arena, maxNorm: maxGradNorm), ema: ema)
        }
        let grid = latentSize / config.patchSize
        let forward = config.forwardFLOPs(frames: frames, gridHeight: grid, gridWidth: grid,
                                          captionLength: captionLength, temporal: true)
        return result("train", name, dtype: model.dtype, backend: backend, batch: batchSize,
                      tokensPerSample: frames * grid * grid, timing, steps: steps, warmup: warmup,
                      flopsPerSample: 3 * forward, device: device)
    }

    /// The factor that clips the gradient norm to `maxNorm`, or 1 without computing the norm when `maxNorm` is 0.
    static func gradientScale(_ arena: ParameterArena, maxNorm: Double) -> Double {
        maxNorm > 0 ? clipGradientNorm(arena, maxNorm: maxNorm).scale : 1
    }

    static func result(_ mode: String, _ name: String, dtype: DType, backend: any Backend, batch: Int,
                       tokensPerSample: Int, _ timing: Timing, steps: Int, warmup: Int, flopsPerSample: Double,
                       device: BenchmarkDevice) -> BenchmarkResult {
        let seconds = timing.medianSeconds
        let teraflops = flopsPerSample * Double(batch) / seconds / 1e12
        return BenchmarkResult(mode: mode, model: name, dtype: dtype.description, device: backend.name,
                               batchSize: batch, tokensPerSample: tokensPerSample, timedSteps: steps,
                               warmupSteps: warmup, medianStepSeconds: seconds,
                               medianHostSeconds: timing.medianHostSeconds,
                               imagesPerSecond: Double(batch) / seconds,
                               tokensPerSecond: Double(batch * tokensPerSample) / seconds,
                               teraflopsPerSecond: teraflops, mfu: teraflops / device.peakTeraflops,
                               peakMemoryBytes: device.peakMemory?(), deviceAllocationsWarm: timing.allocationsWarm,
                               deviceAllocationsDuringTimedSteps: timing.allocationsDuringTimedSteps)
    }
}
