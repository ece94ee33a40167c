import KinemaTensor

/// LayerNorm over the last axis. DiT uses it without affine parameters (elementwise_affine=False) inside the
/// blocks, where adaLN supplies shift and scale; `affine: true` adds weight (ones) and bias (zeros).
public final class LayerNorm: Layer {
    public struct Cache {
        public let x, mean, rstd: Tensor

        public init(x: Tensor, mean: Tensor, rstd: Tensor) {
            self.x = x
            self.mean = mean
            self.rstd = rstd
        }
    }

    public let weight: Parameter?
    public let bias: Parameter?
    public let dim: Int
    public let eps: Double
    let backend: any Backend

    public var parameters: [Parameter] { [weight, bias].compactMap { $0 } }

    public init(backend: any Backend, name: String, dim: Int, affine: Bool, eps: Double, dtype: DType) {
        self.backend = backend
        self.dim = dim
        self.eps = eps
        weight = affine ? Parameter(name: "\(name).weight", shape: [dim], constant: 1, dtype: dtype, backend: backend) : nil
        bias = affine ? Parameter(name: "\(name).bias", shape: [dim], constant: 0, dtype: dtype, backend: backend) : nil
    }

    public func forward(_ x: Tensor) -> (Tensor, Cache) {
        let (y, mean, rstd) = backend.layerNorm(x, weight: weight?.value, bias: bias?.value, eps: eps)
        return (y, Cache(x: x, mean: mean, rstd: rstd))
    }

    public func backward(_ dy: Tensor, _ cache: Cache) -> Tensor {
        backend.layerNormBackward(dy, x: cache.x, weight: weight?.value, mean: cache.mean, rstd: cache.rstd,
                                  dWeight: weight?.gradient, dBias: bias?.gradient)
    }
}

/// RMSNorm over the last axis with a weight (ones): T5's "LayerNorm" (T5LayerNorm), which scales by the root mean
/// square and neither centres nor shifts.
public final class RMSNorm: Layer {
    public let weight: Parameter
    public let dim: Int
    public let eps: Double
    let backend: any Backend

    public var parameters: [Parameter] { [weight] }

    public init(backend: any Backend, name: String, dim: Int, eps: Double, dtype: DType) {
        self.backend = backend
        self.dim = dim
        self.eps = eps
        weight = Parameter(name: "\(name).weight", shape: [dim], constant: 1, dtype: dtype, backend: backend)
    }

    /// y and what the backward needs: x and 1/rms per row.
    public func forward(_ x: Tensor) -> (Tensor, (x: Tensor, rstd: Tensor)) {
        let (y, rstd) = backend.rmsNorm(x, weight: weight.value, eps: eps)
        return (y, (x, rstd))
    }

    public func backward(_ dy: Tensor, _ cache: (x: Tensor, rstd: Tensor)) -> Tensor {
        backend.rmsNormBackward(dy, x: cache.x, weight: weight.value, rstd: cache.rstd, dWeight: weight.gradient)
    }
}
