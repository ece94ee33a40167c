import KinemaTensor

/// y = x Wᵀ + b over the last axis, W stored [out, in] as PyTorch does (checkpoints load without transposes).
/// Default initial values are DiT's: Xavier-uniform weight, zero bias.
public final class Linear: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let inFeatures: Int
    public let outFeatures: Int
    let backend: any Backend

    public var parameters: [Parameter] { bias.map { [weight, $0] } ?? [weight] }

    /// Weights start Xavier-uniform from `seed` (DiT's `_basic_init`), or at zero when `zeroInitialized` (the
    /// adaLN-zero modulation and DiT's final layer); biases start at zero.
    public init(backend: any Backend, name: String, inFeatures: Int, outFeatures: Int, bias: Bool = true, dtype: DType,
                seed: UInt64 = 0, zeroInitialized: Bool = false) {
        self.backend = backend
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        let weightName = "\(name).weight", shape = [outFeatures, inFeatures]
        weight = zeroInitialized
            ? Parameter(name: weightName, shape: shape, constant: 0, dtype: dtype, backend: backend)
            : Parameter(name: weightName, shape: shape,
                        values: Initializers.xavierUniform(shape: shape, fanIn: inFeatures, fanOut: outFeatures,
                                                           seed: seed, stream: initializerStream(for: weightName)),
                        dtype: dtype, backend: backend)
        self.bias = bias ? Parameter(name: "\(name).bias", shape: [outFeatures], constant: 0, dtype: dtype,
                                     backend: backend) : nil
        weight.gradientWrittenByProducts = true
    }

    /// x [..., in] → [..., out]. The backward needs x itself, so there is no separate cache.
    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.shape.last == inFeatures, "\(weight.name): input \(x.shape) does not end in \(inFeatures)")
        return backend.linear(x, weight: weight.value, bias: bias?.value, gelu: false).y
    }

    /// GELU(x Wᵀ + b) in one product (the GELU in the product's epilogue where the backend has one); returns the
    /// activation and the pre-activation, which the backward of the next layer needs (`backward(_:input:geluInput:)`).
    public func forwardGELU(_ x: Tensor) -> (y: Tensor, preActivation: Tensor) {
        precondition(x.shape.last == inFeatures, "\(weight.name): input \(x.shape) does not end in \(inFeatures)")
        let (y, preActivation) = backend.linear(x, weight: weight.value, bias: bias?.value, gelu: true)
        return (y, preActivation!)
    }

    /// Accumulates dW += dyᵀ x and db += Σ dy (unless the caller has: `biasGradientAccumulated`, as a gated
    /// residual's backward does for the layer before it); returns dx = dy W — or, when this layer's input was
    /// GELU(z) and `geluInput` is z, the gradient with respect to z, (dy W) ⊙ GELU′(z), in the same product (which
    /// may also sum db from the dy it reads).
    public func backward(_ dy: Tensor, input x: Tensor, geluInput: Tensor? = nil,
                         biasGradientAccumulated: Bool = false) -> Tensor {
        // The weight gradient is read only by the optimizer: its product runs beside the input gradient's, which
        // the rest of the backward waits for.
        backend.concurrently { accumulateWeightGradient(dy, input: x) }
        return backend.linearInputGradient(dy, weight: weight.value, geluInput: geluInput,
                                           biasGradient: biasGradientAccumulated ? nil : bias?.gradient)
    }

    /// The parameter half of the backward, for callers that need no input gradient (the first layer of an
    /// embedder).
    public func accumulateGradients(_ dy: Tensor, input x: Tensor) {
        backend.concurrently {
            accumulateWeightGradient(dy, input: x)
            if let bias { backend.accumulateBiasGradient(dy.reshaped([-1, outFeatures]), into: bias.gradient) }
        }
    }

    private func accumulateWeightGradient(_ dy: Tensor, input x: Tensor) {
        precondition(dy.shape == Array(x.shape.dropLast()) + [outFeatures],
                     "\(weight.name): gradient \(dy.shape) does not fit input \(x.shape)")
        backend.matmul(dy.reshaped([-1, outFeatures]), x.reshaped([-1, inFeatures]), transposeA: true,
                       transposeB: false, into: weight.gradient, alpha: 1, beta: weight.productBeta())
    }
}
