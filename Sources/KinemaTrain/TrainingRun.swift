import Foundation
import KinemaData
import KinemaNN
import KinemaTensor

/// What every trainer keeps besides its model and loss: the options, AdamW over the model's arena, its EMA, the LR
/// schedule, the data order and the host random stream — with the state a checkpoint saves and restores, and the
/// end of every step (clip, scheduled LR, AdamW + EMA).
final class TrainingRun {
    let options: TrainingOptions
    let optimizer: AdamW
    let ema: ExponentialMovingAverage
    let schedule: LearningRateSchedule
    let dataCount: Int
    let groups: [SampleGroup]?
    var sampler: EpochSampler
    var random: RandomStream

    /// `groups`: bucketed data's indices that may share a batch, with their batch sizes (nil: any, at the options').
    init(arena: ParameterArena, dataCount: Int, groups: [SampleGroup]? = nil, options: TrainingOptions) throws {
        try options.validate()
        if let groups {
            guard groups.contains(where: { $0.indices.count >= $0.batchSize ?? options.batchSize }) else {
                throw TrainingError.options("no bucket of the data fills one batch: "
                    + groups.map { "\($0.indices.count) samples for \($0.batchSize ?? options.batchSize)" }
                        .joined(separator: ", "))
            }
        } else if dataCount < options.batchSize {
            throw TrainingError.options("the data has \(dataCount) samples, fewer than one batch of "
                                        + "\(options.batchSize)")
        }
        self.groups = groups
        self.options = options
        self.dataCount = dataCount
        optimizer = AdamW(arena: arena,
                          hyperparameters: AdamWHyperparameters(learningRate: options.learningRate, beta1: 0.9,
                                                                beta2: 0.999, epsilon: 1e-8,
                                                                weightDecay: options.weightDecay))
        ema = ExponentialMovingAverage(arena: arena, decay: options.emaDecay)
        schedule = LearningRateSchedule(baseRate: options.learningRate, warmupSteps: options.warmupSteps,
                                        decay: options.learningRateDecay, totalSteps: options.steps)
        sampler = EpochSampler(count: dataCount, batchSize: options.batchSize, seed: options.seed, groups: groups)
        random = RandomStream(seed: options.seed)
    }

    var step: Int { optimizer.step }

    var state: TrainingState {
        TrainingState(step: step, randomSeed: random.seed, randomPosition: random.position,
                      samplerEpoch: sampler.epoch, samplerPosition: sampler.position, options: options)
    }

    /// Restores weights, EMA and optimizer from `url` into `model` (whose arena this run updates), then the random
    /// stream and the data position.
    func resume(from url: URL, model: some CheckpointableModel) throws {
        let saved = try TrainingCheckpoint.restore(from: url, model: model, ema: ema, optimizer: optimizer)
        random = RandomStream(seed: saved.randomSeed, position: saved.randomPosition)
        sampler = try EpochSampler(count: dataCount, batchSize: options.batchSize, seed: options.seed, groups: groups,
                                   resumingAt: .init(epoch: saved.samplerEpoch, position: saved.samplerPosition))
    }

    /// The end of a step once the gradients are in the arena: clip the global norm, AdamW at the scheduled rate,
    /// EMA. Returns the norm before clipping and the rate.
    func update(_ arena: ParameterArena) -> (norm: Double, rate: Double) {
        let (norm, scale) = clipGradientNorm(arena, maxNorm: options.maxGradNorm)
        let rate = schedule.rate(at: optimizer.step + 1)
        optimizer.update(learningRate: rate, gradScale: scale, ema: ema)
        return (norm, rate)
    }
}
