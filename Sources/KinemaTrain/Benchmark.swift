import Dispatch
import KinemaDiffusion
import KinemaModels
import KinemaNN
import KinemaTensor

/// `kinema bench`: time DiT training or sampling steps on random inputs of the model's shape. Warm-up steps are
/// excluded, the median step is reported, FLOPs are counted as ../shared/DESIGN.md says (a training step is 3×
/// the forward; a guided sampling step is one forward of the doubled batch).
public struct BenchmarkResult: Codable, Sendable {
    public var mode: String
    public var model: String
    public var batchSize: Int
    public var tokensPerSample: Int
    public var medianStepSeconds: Double
    public var imagesPerSecond: Double
    public var tokensPerSecond: Double
    public var teraflopsPerSecond: Double
    /// Counted FLOP/s over `peakTeraflops` (H100 SXM dense bf16: 989, as DESIGN.md counts MFU).
    public var mfu: Double
    public var peakMemoryBytes: Int?
}

public enum Benchmark {
    /// Median seconds of `steps` calls of `body` after `warmup` untimed ones; the device is synchronised around
    /// each step so the time covers its whole work.
    static func medianSeconds(steps: Int, warmup: Int, backend: any Backend, _ body: () -> Void) -> Double {
        for _ in 0..<warmup { body() }
        backend.synchronize()
        var times: [Double] = []
        for _ in 0..<steps {
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            backend.synchronize()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return times.sorted()[times.count / 2]
    }

    /// Forward, DiT's hybrid loss, backward and an AdamW update per step.
    public static func train(model: DiT, name: String, batchSize: Int, steps: Int, warmup: Int,
                             peakTeraflops: Double, peakMemory: (() -> Int)?) -> BenchmarkResult {
        let backend = model.backend, config = model.config
        let shape = [batchSize, config.inChannels, config.inputSize, config.inputSize]
        let xStart = backend.randomNormal(shape, dtype: model.dtype, seed: 1, offset: 0)
        let noise = backend.randomNormal(shape, dtype: model.dtype, seed: 2, offset: 0)
        let timesteps = (0..<batchSize).map { ($0 * 997) % 1000 }
        let t = backend.upload(timesteps.map(Double.init), shape: [batchSize], dtype: model.dtype)
        let y = backend.upload((0..<batchSize).map { Int32($0 % config.numClasses) }, shape: [batchSize])
        let diffusion = GaussianDiffusion(learnSigma: config.learnSigma)
        let xT = diffusion.qSample(xStart, timesteps: timesteps, noise: noise, backend: backend)
        let optimizer = AdamW(arena: model.arena, hyperparameters: AdamWHyperparameters(learningRate: 1e-4))
        let seconds = medianSeconds(steps: steps, warmup: warmup, backend: backend) {
            model.zeroGradients()
            let (out, cache) = model.forward(xT, timesteps: t, labels: y)
            let loss = diffusion.trainingLoss(modelOutput: out, xStart: xStart, xT: xT, noise: noise,
                                              timesteps: timesteps, backend: backend)
            model.backward(loss.gradient, cache)
            optimizer.update(learningRate: 1e-4)
        }
        return result("train", name, config, batchSize, seconds, flopsPerSample: 3 * config.forwardFLOPs,
                      peakTeraflops: peakTeraflops, peakMemory: peakMemory)
    }

    /// One classifier-free-guided sampling step: a forward of the doubled batch.
    public static func sample(model: DiT, name: String, batchSize: Int, steps: Int, warmup: Int,
                              peakTeraflops: Double, peakMemory: (() -> Int)?) -> BenchmarkResult {
        let backend = model.backend, config = model.config
        let shape = [2 * batchSize, config.inChannels, config.inputSize, config.inputSize]
        let x = backend.randomNormal(shape, dtype: model.dtype, seed: 1, offset: 0)
        let t = backend.upload([Double](repeating: 500, count: 2 * batchSize), shape: [2 * batchSize], dtype: model.dtype)
        let y = backend.upload((0..<(2 * batchSize)).map { Int32($0 % (config.numClasses + 1)) }, shape: [2 * batchSize])
        let seconds = medianSeconds(steps: steps, warmup: warmup, backend: backend) { _ = model(x, timesteps: t, labels: y) }
        return result("sample", name, config, batchSize, seconds, flopsPerSample: 2 * config.forwardFLOPs,
                      peakTeraflops: peakTeraflops, peakMemory: peakMemory)
    }

    static func result(_ mode: String, _ name: String, _ config: DiTConfig, _ batch: Int, _ seconds: Double,
                       flopsPerSample: Double, peakTeraflops: Double, peakMemory: (() -> Int)?) -> BenchmarkResult {
        let teraflops = flopsPerSample * Double(batch) / seconds / 1e12
        return BenchmarkResult(mode: mode, model: name, batchSize: batch, tokensPerSample: config.tokenCount,
                               medianStepSeconds: seconds, imagesPerSecond: Double(batch) / seconds,
                               tokensPerSecond: Double(batch * config.tokenCount) / seconds,
                               teraflopsPerSecond: teraflops, mfu: teraflops / peakTeraflops,
                               peakMemoryBytes: peakMemory?())
    }
}
