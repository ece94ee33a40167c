public struct AdamWHyperparameters: Sendable, Equatable {
    public var learningRate: Double
    public var beta1: Double
    public var beta2: Double
    public var epsilon: Double
    public var weightDecay: Double

    public init(learningRate: Double, beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-8,
                weightDecay: Double = 0) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
    }
}

/// Optimizer state updates, in place, over flat buffers (a `ParameterArena`'s, one call per step) or single tensors.
public protocol OptimizerOps: AnyObject {
    /// One AdamW step (decoupled weight decay, bias correction for step `step` ≥ 1) on fp32 state:
    /// p ← p − lr·wd·p; m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²; p ← p − lr · m̂ / (√v̂ + ε).
    /// `master`, `gradient`, `m` and `v` have one shape and dtype (f32, or f64 for the reference checks).
    /// `gradScale` multiplies the gradient first (gradient clipping folds in here). `computeCopy` (bf16, f16 or
    /// f32, same element count, f32 master only) receives the updated master rounded to nearest even in the
    /// same pass: the weights the layers compute with under mixed precision. `ema` (the master's shape and dtype),
    /// when given, moves toward the updated master as `emaUpdate` would after it: in the same pass, or (CUDA with
    /// a second stream) in its own pass beside the work queued next, done by the next `awaitConcurrentWork()`.
    func adamW(master: Tensor, gradient: Tensor, m: Tensor, v: Tensor, computeCopy: Tensor?, step: Int,
               hyperparameters: AdamWHyperparameters, gradScale: Double, ema: (average: Tensor, decay: Double)?)
    /// ema ← decay · ema + (1 − decay) · weights (f32 or f64, one shape and dtype).
    func emaUpdate(_ ema: Tensor, toward weights: Tensor, decay: Double)
    /// Σ x² (f32 or f64) accumulated in f64 with a fixed-order reduction (no atomics): the same value on every
    /// run and thread count. One pass, for the global gradient norm over a flat gradient buffer.
    func squaredNorm(_ x: Tensor) -> Double
}

extension OptimizerOps {
    /// AdamW alone, no EMA.
    public func adamW(master: Tensor, gradient: Tensor, m: Tensor, v: Tensor, computeCopy: Tensor?, step: Int,
                      hyperparameters: AdamWHyperparameters, gradScale: Double) {
        adamW(master: master, gradient: gradient, m: m, v: v, computeCopy: computeCopy, step: step,
              hyperparameters: hyperparameters, gradScale: gradScale, ema: nil)
    }
}
