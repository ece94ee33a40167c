import KinemaNN
import KinemaTensor

/// An exponential moving average of the weights (DiT samples from it), kept flat in the precision of the arena's
/// full weights (the f32 master under mixed precision), and updated in one pass per step.
public final class ExponentialMovingAverage {
    public let decay: Double
    let backend: any Backend
    public let arena: ParameterArena
    /// Flat, laid out as the arena's weights.
    public let average: Tensor

    /// Starts as a copy of the current weights, as DiT's `update_ema(ema, model, decay=0)` does.
    public init(arena: ParameterArena, decay: Double) {
        self.arena = arena
        self.decay = decay
        backend = arena.backend
        average = backend.clone(arena.weights)
    }

    /// The average of each parameter, in the order of `arena.parameters` (views of `average`), once any update
    /// still running beside other work (CUDABackend.adamW) is done.
    public var shadows: [Tensor] {
        backend.awaitConcurrentWork()
        return arena.parameters.indices.map { arena.view(of: average, parameter: $0) }
    }

    /// The decay used after `updates` updates: min(decay, (1 + n) / (10 + n)), the warm-up diffusers' EMAModel and
    /// timm use, so a short run's average is not dominated by its zero-initialised start (with a fixed 0.9999, a
    /// DiT's EMA after 1000 steps would still be 90% initial weights).
    public func effectiveDecay(afterUpdates updates: Int) -> Double {
        min(decay, Double(1 + updates) / Double(10 + updates))
    }

    /// One update; `step` is the number of optimizer steps taken so far (1 after the first).
    public func update(step: Int) {
        backend.emaUpdate(average, toward: arena.weights, decay: effectiveDecay(afterUpdates: step))
    }

    public func stateDict() -> [(name: String, tensor: Tensor)] {
        zip(arena.parameters, shadows).map { ("ema.\($0.name)", $1) }
    }

    public func load(_ lookup: (String) throws -> Tensor) throws {
        for (name, shadow) in stateDict() { backend.copy(try lookup(name), into: shadow) }
    }
}
