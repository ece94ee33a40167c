import KinemaNN
import KinemaTensor

/// An exponential moving average of the weights (DiT samples from it), kept in the parameters' dtype.
public final class ExponentialMovingAverage {
    public let decay: Double
    let backend: any Backend
    let parameters: [Parameter]
    public private(set) var shadows: [Tensor]

    /// Starts as a copy of the current weights, as DiT's `update_ema(ema, model, decay=0)` does.
    public init(parameters: [Parameter], decay: Double, backend: any Backend) {
        self.parameters = parameters
        self.decay = decay
        self.backend = backend
        shadows = parameters.map { backend.clone($0.value) }
    }

    /// The decay used after `updates` updates: min(decay, (1 + n) / (10 + n)), the warm-up diffusers' EMAModel and
    /// timm use, so a short run's average is not dominated by its zero-initialised start (with a fixed 0.9999, a
    /// DiT's EMA after 1000 steps would still be 90% initial weights).
    public func effectiveDecay(afterUpdates updates: Int) -> Double {
        min(decay, Double(1 + updates) / Double(10 + updates))
    }

    /// One update; `step` is the number of optimizer steps taken so far (1 after the first).
    public func update(step: Int) {
        let decay = effectiveDecay(afterUpdates: step)
        for (shadow, parameter) in zip(shadows, parameters) { backend.emaUpdate(shadow, toward: parameter.value, decay: decay) }
    }

    public func stateDict() -> [(name: String, tensor: Tensor)] {
        zip(parameters, shadows).map { ("ema.\($0.name)", $1) }
    }

    public func load(_ lookup: (String) throws -> Tensor) throws {
        for (parameter, shadow) in zip(parameters, shadows) { backend.copy(try lookup("ema.\(parameter.name)"), into: shadow) }
    }
}
