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

    public func update() {
        for (shadow, parameter) in zip(shadows, parameters) { backend.emaUpdate(shadow, toward: parameter.value, decay: decay) }
    }

    public func stateDict() -> [(name: String, tensor: Tensor)] {
        zip(parameters, shadows).map { ("ema.\($0.name)", $1) }
    }

    public func load(_ lookup: (String) throws -> Tensor) throws {
        for (parameter, shadow) in zip(parameters, shadows) { backend.copy(try lookup("ema.\(parameter.name)"), into: shadow) }
    }
}
