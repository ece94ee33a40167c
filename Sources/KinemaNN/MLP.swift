import KinemaTensor

/// timm's Mlp as DiT configures it: fc1 → GELU (tanh approximation) → fc2 (also diffusers' FeedForward with
/// "gelu-approximate" and PixArt's caption projection, under their names).
public final class MLP: Layer {
    public struct Cache {
        /// The input, fc1's output (GELU's input) and GELU's output (fc2's input).
        public let x, hidden, activated: Tensor
    }

    public let fc1: Linear
    public let fc2: Linear
    let backend: any Backend

    public var parameters: [Parameter] { fc1.parameters + fc2.parameters }

    /// dim → hiddenDim → outDim (dim when nil). `layerNames`: the two linears' names under `name` (timm's
    /// "fc1"/"fc2"; diffusers' FeedForward "net.0.proj"/"net.2", PixArt's caption projection "linear_1"/"linear_2").
    public init(backend: any Backend, name: String, dim: Int, hiddenDim: Int, outDim: Int? = nil,
                layerNames: (String, String) = ("fc1", "fc2"), dtype: DType, seed: UInt64 = 0) {
        self.backend = backend
        fc1 = Linear(backend: backend, name: "\(name).\(layerNames.0)", inFeatures: dim, outFeatures: hiddenDim,
                     dtype: dtype, seed: seed)
        fc2 = Linear(backend: backend, name: "\(name).\(layerNames.1)", inFeatures: hiddenDim,
                     outFeatures: outDim ?? dim, dtype: dtype, seed: seed)
    }

    /// GELU runs in fc1's product and its gradient in fc2's input-gradient product (cuBLASLt epilogues on CUDA).
    public func forward(_ x: Tensor) -> (Tensor, Cache) {
        let (activated, hidden) = fc1.forwardGELU(x)
        return (fc2.forward(activated), Cache(x: x, hidden: hidden, activated: activated))
    }

    /// `outputBiasGradientAccumulated`: fc2's bias gradient is already added (see Linear.backward).
    public func backward(_ dy: Tensor, _ cache: Cache, outputBiasGradientAccumulated: Bool = false) -> Tensor {
        let dHidden = fc2.backward(dy, input: cache.activated, geluInput: cache.hidden,
                                   biasGradientAccumulated: outputBiasGradientAccumulated)
        return fc1.backward(dHidden, input: cache.x)
    }

    /// The parameter half of the backward, for an input that is data (a frozen text encoder's states): no dx.
    public func accumulateGradients(_ dy: Tensor, _ cache: Cache) {
        let dHidden = fc2.backward(dy, input: cache.activated, geluInput: cache.hidden)
        fc1.accumulateGradients(dHidden, input: cache.x)
    }
}
