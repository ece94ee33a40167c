import KinemaTensor

/// GroupNorm over x [B, C, H, W] with per-channel weight and bias, one fused op (`NNOps.groupNorm`). Forward
/// only: it serves the frozen VAE.
public final class GroupNorm: Layer {
    public let weight, bias: Parameter
    public let groups: Int, eps: Double
    let backend: any Backend
    public var parameters: [Parameter] { [weight, bias] }

    public init(backend: any Backend, name: String, channels: Int, groups: Int, eps: Double = 1e-6, dtype: DType) {
        precondition(channels % groups == 0, "\(name): \(channels) channels in \(groups) groups")
        self.backend = backend
        (self.groups, self.eps) = (groups, eps)
        weight = Parameter(name: "\(name).weight", shape: [channels], constant: 1, dtype: dtype, backend: backend)
        bias = Parameter(name: "\(name).bias", shape: [channels], constant: 0, dtype: dtype, backend: backend)
    }

    /// x [B, C, …] → the same shape.
    public func forward(_ x: Tensor) -> Tensor {
        backend.groupNorm(x, weight: weight.value, bias: bias.value, groups: groups, eps: eps)
    }
}
