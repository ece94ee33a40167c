import KinemaTensor

/// timm's Mlp as DiT configures it: fc1 → GELU (tanh approximation) → fc2.
public final class MLP: Layer {
    public struct Cache {
        /// The input, fc1's output (GELU's input) and GELU's output (fc2's input).
        public let x, hidden, activated: Tensor
    }

    public let fc1: Linear
    public let fc2: Linear
    let backend: any Backend

    public var parameters: [Parameter] { fc1.parameters + fc2.parameters }

    public init(backend: any Backend, name: String, dim: Int, hiddenDim: Int, dtype: DType, seed: UInt64 = 0) {
        self.backend = backend
        fc1 = Linear(backend: backend, name: "\(name).fc1", inFeatures: dim, outFeatures: hiddenDim, dtype: dtype,
                     seed: seed)
        fc2 = Linear(backend: backend, name: "\(name).fc2", inFeatures: hiddenDim, outFeatures: dim, dtype: dtype,
                     seed: seed)
    }

    /// GELU runs in fc1's product and its gradient in fc2's input-gradient product (cuBLASLt epilogues on CUDA).
    public func forward(_ x: Tensor) -> (Tensor, Cache) {
        let (activated, hidden) = fc1.forwardGELU(x)
        return (fc2.forward(activated), Cache(x: x, hidden: hidden, activated: activated))
    }

    public func backward(_ dy: Tensor, _ cache: Cache) -> Tensor {
        let dHidden = fc2.backward(dy, input: cache.activated, geluInput: cache.hidden)
        return fc1.backward(dHidden, input: cache.x)
    }
}
