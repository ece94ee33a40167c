import Foundation
import KinemaNN
import KinemaTensor

/// AdamW over fp32 state (first and second moments), with decoupled weight decay and bias correction, as one
/// fused pass over a `ParameterArena`: it updates the f32 master weights (the values themselves in an f32 model)
/// and rewrites the bf16 compute copy in the same pass. Gradient clipping folds in as a gradient scale.
public final class AdamW {
    public var hyperparameters: AdamWHyperparameters
    public private(set) var step = 0
    let backend: any Backend
    public let arena: ParameterArena
    /// First and second moments, flat, laid out as the arena's weights.
    let m: Tensor
    let v: Tensor

    public init(arena: ParameterArena, hyperparameters: AdamWHyperparameters) {
        self.arena = arena
        backend = arena.backend
        self.hyperparameters = hyperparameters
        m = backend.zeros([arena.count], dtype: arena.weights.dtype)
        v = backend.zeros([arena.count], dtype: arena.weights.dtype)
    }

    /// Applies one update with learning rate `learningRate` and gradients multiplied by `gradScale`, and moves
    /// `ema` (if given) toward the new weights in the same pass, as `ema.update(step:)` would after it. The update
    /// consumes the gradients (`ParameterArena.consumeGradients`): ready for the next backward without a fill, the
    /// ones layers add into zeroed, the ones products write left stale for their next product to overwrite.
    public func update(learningRate: Double, gradScale: Double = 1, ema: ExponentialMovingAverage? = nil) {
        step += 1
        var h = hyperparameters
        h.learningRate = learningRate
        precondition(ema.map { $0.arena === arena } ?? true, "AdamW.update: the EMA belongs to another arena")
        arena.settleGradients()
        backend.adamW(master: arena.weights, gradient: arena.gradients, m: m, v: v, computeCopy: arena.computeCopy,
                      step: step, hyperparameters: h, gradScale: gradScale,
                      ema: ema.map { ($0.average, $0.effectiveDecay(afterUpdates: step)) })
        arena.consumeGradients()
    }

    /// State tensors under checkpoint names (views of the flat moments, one pair per parameter), and restore.
    public func stateDict() -> [(name: String, tensor: Tensor)] {
        arena.parameters.indices.flatMap { index in
            let name = arena.parameters[index].name
            return [("optimizer.exp_avg.\(name)", arena.view(of: m, parameter: index)),
                    ("optimizer.exp_avg_sq.\(name)", arena.view(of: v, parameter: index))]
        }
    }

    public func load(step: Int, _ lookup: (String) throws -> Tensor) throws {
        self.step = step
        for (name, tensor) in stateDict() { backend.copy(try lookup(name), into: tensor) }
    }
}

/// The global L2 norm of all gradients — one deterministic reduction over the arena's flat gradients (the padding
/// is zero) — and the factor that clips it to `maxNorm` (1 when under it), as torch.nn.utils.clip_grad_norm_
/// computes it.
public func clipGradientNorm(_ arena: ParameterArena, maxNorm: Double?) -> (norm: Double, scale: Double) {
    arena.settleGradients()
    let norm = arena.backend.squaredNorm(arena.gradients).squareRoot()
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
