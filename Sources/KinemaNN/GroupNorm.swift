import KinemaTensor

/// GroupNorm over x [B, C, H, W] with per-channel weight and bias: LayerNorm of each (sample, group) row, then
/// the affine map per channel (a row of [B·C, H·W]).
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

    /// x [B, C, …] → the same shape. Forward only (it serves the frozen VAE).
    public func forward(_ x: Tensor) -> Tensor {
        let (batch, channels) = (x.shape[0], x.shape[1]), plane = x.count / (batch * channels)
        let normed = backend.layerNorm(x.reshaped([batch * groups, -1]), weight: nil, bias: nil, eps: eps).y
            .reshaped([batch * channels, plane])
        let ones = backend.affine(backend.zeros(normed.shape, dtype: normed.dtype), scale: 0, shift: 1)
        // The per-row coefficients of rowwiseAxpby are host values: C of each, read at every call so loaded
        // weights always apply.
        let scale = backend.downloadDouble(weight.value), shift = backend.downloadDouble(bias.value)
        let y = backend.rowwiseAxpby((0..<batch).flatMap { _ in scale }, normed, (0..<batch).flatMap { _ in shift }, ones)
        return y.reshaped(x.shape)
    }
}
