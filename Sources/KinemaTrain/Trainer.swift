import Foundation
import KinemaData
import KinemaDiffusion
import KinemaModels
import KinemaNN
import KinemaTensor

/// What one optimisation step measured.
public struct StepMetrics: Codable, Equatable, Sendable {
    public var step: Int
    public var loss: Double
    public var mse: Double
    public var vb: Double?
    public var gradNorm: Double
    public var lr: Double
    public var imagesPerSecond: Double
}

/// The DiT training loop: batches from a data source, DiT's diffusion loss, hand-written backward, clipped AdamW,
/// EMA, JSON-lines logging and atomic checkpoints that resume bit-exactly.
public final class Trainer {
    public let model: DiT
    public let diffusion: GaussianDiffusion
    let data: any DataSource
    let training: TrainingRun
    var backend: any Backend { model.backend }
    public var options: TrainingOptions { training.options }
    public var optimizer: AdamW { training.optimizer }
    public var ema: ExponentialMovingAverage { training.ema }

    public init(model: DiT, data: any DataSource, options: TrainingOptions) throws {
        guard data.numClasses <= model.config.numClasses else {
            throw TrainingError.options("the data has \(data.numClasses) classes but the model only \(model.config.numClasses)")
        }
        guard data.imageSize == model.config.inputSize, model.config.inChannels == 3 else {
            throw TrainingError.options("the model takes \(model.config.inChannels)×\(model.config.inputSize)² inputs "
                + "but the data gives 3×\(data.imageSize)² images")
        }
        self.model = model
        self.data = data
        training = try TrainingRun(arena: model.arena, dataCount: data.count, options: options)
        diffusion = GaussianDiffusion(schedule: .dit(), learnSigma: model.config.learnSigma)
    }

    public var step: Int { training.step }
    public var state: TrainingState { training.state }

    /// Restores weights, EMA, optimizer, random streams and data position from a checkpoint of this run.
    public func resume(from url: URL) throws {
        try training.resume(from: url, model: model)
    }

    public func saveCheckpoint(to url: URL) throws {
        try TrainingCheckpoint.save(to: url, model: model, ema: ema, optimizer: optimizer, state: state)
    }

    /// One optimisation step on the next batch.
    public func trainStep() -> StepMetrics {
        let start = DispatchTime.now().uptimeNanoseconds
        let batch = data.batch(indices: training.sampler.nextBatch(), random: &training.random)
        let xStart = backend.upload(batch.images, shape: batch.shape, dtype: model.ioDType)
        let labels = backend.upload(model.dropLabels(batch.labels, random: &training.random), shape: [batch.count])
        let (timesteps, noise, xT) = diffusion.noisedBatch(xStart, random: &training.random, backend: backend)
        let timestepTensor = backend.upload(timesteps.map(Double.init), shape: [batch.count], dtype: model.ioDType)

        // The gradients read as zero: the arena starts so, and every optimizer update consumes them (zeroed, or left
        // stale for the backward's products to overwrite).
        let (output, cache) = model.forward(xT, timesteps: timestepTensor, labels: labels)
        let loss = diffusion.trainingLoss(modelOutput: output, xStart: xStart, xT: xT, noise: noise,
                                          timesteps: timesteps, backend: backend)
        model.backward(loss.gradient, cache)
        let (norm, rate) = training.update(model.arena)
        backend.synchronize()

        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return StepMetrics(step: optimizer.step, loss: loss.loss, mse: loss.meanMSE, vb: loss.meanVB,
                           gradNorm: norm, lr: rate, imagesPerSecond: Double(batch.count) / seconds)
    }

    /// Trains until `options.steps`, logging every `logEvery` steps and checkpointing to `checkpoint` every
    /// `checkpointEvery` steps and at the end.
    public func run(checkpoint: URL?, log: TrainingLog) throws {
        try TrainingLoop.run(steps: options.steps, logEvery: options.logEvery,
                             checkpointEvery: options.checkpointEvery, step: { step }, train: trainStep,
                             save: checkpoint.map { url in { try self.saveCheckpoint(to: url) } }, log: log)
    }
}

/// The loop every trainer runs: steps until `steps`, a log line (the window's mean) every `logEvery` steps,
/// a checkpoint every `checkpointEvery` steps and at the end.
enum TrainingLoop {
    static func run(steps: Int, logEvery: Int, checkpointEvery: Int, step: () -> Int, train: () -> StepMetrics,
                    save: (() throws -> Void)?, log: TrainingLog) throws {
        var window: [StepMetrics] = []
        while step() < steps {
            let metrics = train()
            window.append(metrics)
            if step() % logEvery == 0 || step() == steps {
                log.record(StepMetrics.average(window))
                window.removeAll()
            }
            log.progress(step: step(), total: steps, metrics: metrics)
            if let save, checkpointEvery > 0, step() % checkpointEvery == 0, step() < steps { try save() }
        }
        try save?()
        log.finish()
    }
}

extension StepMetrics {
    /// The mean of a logging window, stamped with its last step (loss curves read smoother than single steps).
    static func average(_ window: [StepMetrics]) -> StepMetrics {
        let n = Double(window.count)
        func mean(_ value: (StepMetrics) -> Double) -> Double { window.map(value).reduce(0, +) / n }
        let vbs = window.compactMap(\.vb)
        return StepMetrics(step: window.last!.step, loss: mean(\.loss), mse: mean(\.mse),
                           vb: vbs.isEmpty ? nil : vbs.reduce(0, +) / Double(vbs.count), gradNorm: mean(\.gradNorm),
                           lr: window.last!.lr, imagesPerSecond: n / window.map { 1 / $0.imagesPerSecond }.reduce(0, +))
    }
}
