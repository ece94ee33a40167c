import Foundation
import KinemaNN
import KinemaTensor

/// AdamW over fp32 state (first and second moments per parameter), with decoupled weight decay and bias
/// correction; gradient clipping folds into the same pass as a gradient scale.
public final class AdamW {
    public var hyperparameters: AdamWHyperparameters
    public private(set) var step = 0
    let backend: any Backend
    let parameters: [Parameter]
    /// First and second moments, in the order of `parameters`.
    var moments: [(m: Tensor, v: Tensor)]

    public init(parameters: [Parameter], backend: any Backend, hyperparameters: AdamWHyperparameters) {
        self.parameters = parameters
        self.backend = backend
        self.hyperparameters = hyperparameters
        moments = parameters.map {
            (backend.zeros($0.value.shape, dtype: $0.value.dtype), backend.zeros($0.value.shape, dtype: $0.value.dtype))
        }
    }

    /// Applies one update with learning rate `learningRate` and gradients multiplied by `gradScale`.
    public func update(learningRate: Double, gradScale: Double = 1) {
        step += 1
        var h = hyperparameters
        h.learningRate = learningRate
        for (parameter, moment) in zip(parameters, moments) {
            backend.adamW(parameter: parameter.value, gradient: parameter.gradient, m: moment.m, v: moment.v, step: step,
                          hyperparameters: h, gradScale: gradScale)
        }
    }

    /// State tensors under checkpoint names, and restore from them.
    public func stateDict() -> [(name: String, tensor: Tensor)] {
        zip(parameters, moments).flatMap { parameter, moment in
            [("optimizer.exp_avg.\(parameter.name)", moment.m), ("optimizer.exp_avg_sq.\(parameter.name)", moment.v)]
        }
    }

    public func load(step: Int, _ lookup: (String) throws -> Tensor) throws {
        self.step = step
        for (parameter, moment) in zip(parameters, moments) {
            backend.copy(try lookup("optimizer.exp_avg.\(parameter.name)"), into: moment.m)
            backend.copy(try lookup("optimizer.exp_avg_sq.\(parameter.name)"), into: moment.v)
        }
    }
}

/// The global L2 norm of all gradients, and the factor that clips it to `maxNorm` (1 when under it), as
/// torch.nn.utils.clip_grad_norm_ computes it.
public func clipGradientNorm(_ parameters: [Parameter], maxNorm: Double?, backend: any Backend) -> (norm: Double, scale: Double) {
    let norm = parameters.map { backend.sumOfSquares($0.gradient) }.reduce(0, +).squareRoot()
    guard let maxNorm, maxNorm > 0, norm.isFinite else { return (norm, 1) }
    return (norm, min(1, maxNorm / (norm + 1e-6)))
}

/// Linear warm-up from 0 to the base rate over `warmupSteps`, then constant (DiT trains at a constant 1e-4), or
/// a cosine decay to `finalRatio` × base at `totalSteps` (short runs end sharper when the rate comes down).
public struct LearningRateSchedule: Codable, Equatable, Sendable {
    public enum Decay: String, Codable, CaseIterable, Sendable {
        case constant, cosine
    }

    public var baseRate: Double
    public var warmupSteps: Int
    public var decay: Decay
    public var totalSteps: Int
    public var finalRatio: Double

    public init(baseRate: Double, warmupSteps: Int = 0, decay: Decay = .constant, totalSteps: Int = 0,
                finalRatio: Double = 0.1) {
        self.baseRate = baseRate
        self.warmupSteps = warmupSteps
        self.decay = decay
        self.totalSteps = totalSteps
        self.finalRatio = finalRatio
    }

    /// The rate for the update numbered `step` (1-based).
    public func rate(at step: Int) -> Double {
        if warmupSteps > 0 && step < warmupSteps { return baseRate * Double(step) / Double(warmupSteps) }
        guard decay == .cosine, totalSteps > warmupSteps else { return baseRate }
        let progress = min(1, Double(step - warmupSteps) / Double(totalSteps - warmupSteps))
        return baseRate * (finalRatio + (1 - finalRatio) * 0.5 * (1 + cos(Double.pi * progress)))
    }
}
