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

/// Optimizer state updates, in place.
public protocol OptimizerOps: AnyObject {
    /// One AdamW step (decoupled weight decay, bias correction for step `step` ≥ 1) on fp32 state:
    /// p ← p − lr·wd·p; m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²; p ← p − lr · m̂ / (√v̂ + ε).
    /// `gradScale` multiplies the gradient first (gradient clipping folds in here).
    func adamW(parameter: Tensor, gradient: Tensor, m: Tensor, v: Tensor, step: Int,
               hyperparameters: AdamWHyperparameters, gradScale: Double)
    /// ema ← decay · ema + (1 − decay) · parameter
    func emaUpdate(_ ema: Tensor, toward parameter: Tensor, decay: Double)
}
