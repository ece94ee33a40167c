import KinemaTensor

/// GroupNorm over x [B, C, H, W] with per-channel weight and bias: LayerNorm of each (sample, group) row, then
/// the affine map per channel (a row of [B·C, H·W]) as one `rowwiseAxpby` against a tensor of ones.
///
/// Forward only: it serves the frozen VAE. `rowwiseAxpby` takes its per-row coefficients from the host, so the
/// weight and bias are read from the device once, on first use, and again only after `weightsChanged()` (which
/// the VAE's loader calls): no device-to-host copy, and no synchronisation, in a steady forward.
public final class GroupNorm: Layer {
    public let weight, bias: Parameter
    public let groups: Int, eps: Double
    let backend: any Backend
    private var hostAffine: (scale: [Double], shift: [Double])?
    public var parameters: [Parameter] { [weight, bias] }

    /// Forgets the host copy of the weight and bias (after they were written).
    public func weightsChanged() { hostAffine = nil }

    public init(backend: any Backend, name: String, channels: Int, groups: Int, eps: Double = 1e-6, dtype: DType) {
        precondition(channels % groups == 0, "\(name): \(channels) channels in \(groups) groups")
        self.backend = backend
        (self.groups, self.eps) = (groups, eps)
        weight = Parameter(name: "\(name).weight", shape: [channels], constant: 1, dtype: dtype, backend: backend)
        bias = Parameter(name: "\(name).bias", shape: [channels], constant: 0, dtype: dtype, backend: backend)
    }

    /// x [B, C, …] → the same shape.
    public func forward(_ x: Tensor) -> Tensor {
        let (batch, channels) = (x.shape[0], x.shape[1]), plane = x.count / (batch * channels)
        let normed = backend.layerNorm(x.reshaped([batch * groups, -1]), weight: nil, bias: nil, eps: eps).y
            .reshaped([batch * channels, plane])
        let affine = hostAffine ?? (backend.downloadDouble(weight.value), backend.downloadDouble(bias.value))
        hostAffine = affine
        // A tensor of ones for the bias term (made per call: kept, it would hold a full activation per shape).
        let unit = backend.affine(backend.zeros(normed.shape, dtype: normed.dtype), scale: 0, shift: 1)
        let y = backend.rowwiseAxpby((0..<batch).flatMap { _ in affine.scale }, normed,
                                     (0..<batch).flatMap { _ in affine.shift }, unit)
        return y.reshaped(x.shape)
    }
}
