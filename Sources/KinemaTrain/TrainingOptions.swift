/// The knobs of a training run; stored in every checkpoint so `--resume` continues with the same ones.
public struct TrainingOptions: Codable, Equatable, Sendable {
    public var batchSize: Int
    public var steps: Int
    public var learningRate: Double
    public var warmupSteps: Int
    /// After warm-up: constant, or cosine decay to a tenth of the rate at `steps`.
    public var learningRateDecay: LearningRateSchedule.Decay
    public var weightDecay: Double
    /// Clip the global gradient norm to this value; nil or 0 disables clipping.
    public var maxGradNorm: Double?
    public var emaDecay: Double
    public var seed: UInt64
    /// Save a checkpoint every this many steps (and always at the end); 0 saves only at the end.
    public var checkpointEvery: Int
    /// Write a JSON log line every this many steps.
    public var logEvery: Int

    public init(batchSize: Int = 32, steps: Int = 1000, learningRate: Double = 1e-4, warmupSteps: Int = 0,
                learningRateDecay: LearningRateSchedule.Decay = .constant, weightDecay: Double = 0, maxGradNorm: Double? = 1, emaDecay: Double = 0.9999, seed: UInt64 = 0,
                checkpointEvery: Int = 500, logEvery: Int = 10) {
        self.batchSize = batchSize
        self.steps = steps
        self.learningRate = learningRate
        self.warmupSteps = warmupSteps
        self.learningRateDecay = learningRateDecay
        self.weightDecay = weightDecay
        self.maxGradNorm = maxGradNorm
        self.emaDecay = emaDecay
        self.seed = seed
        self.checkpointEvery = checkpointEvery
        self.logEvery = logEvery
    }

    public func validate() throws {
        guard batchSize > 0 else { throw TrainingError.options("--batch-size must be positive, got \(batchSize)") }
        guard steps >= 0 else { throw TrainingError.options("--steps must not be negative, got \(steps)") }
        guard learningRate > 0, learningRate.isFinite else {
            throw TrainingError.options("--lr must be a positive number, got \(learningRate)")
        }
        guard (0..<1).contains(emaDecay) else { throw TrainingError.options("--ema-decay must be in [0, 1), got \(emaDecay)") }
        guard warmupSteps >= 0, checkpointEvery >= 0, logEvery > 0 else {
            throw TrainingError.options("--warmup-steps and --checkpoint-every must be ≥ 0 and --log-every > 0")
        }
    }
}
