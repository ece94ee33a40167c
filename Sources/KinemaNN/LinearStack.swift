import KinemaTensor

/// Linear layers that read one input, run as one: y = x [W₀; W₁; …]ᵀ + [b₀; b₁; …], the layers' outputs side by side
/// along the last axis. Their weights (and biases) must lie back to back in an arena — the layers' parameters
/// consecutive in its order, weights first, then biases — so the stacked matrix is a view of the arena, not a copy:
/// the layers keep their own names and checkpoints, and one product replaces one per layer (DiT's adaLN
/// modulations: every block reads the same SiLU(c)).
public struct LinearStack {
    public let layers: [Linear]
    let backend: any Backend
    let inFeatures: Int
    /// [Σ out, in] and [Σ out] views of the arena's values and gradients.
    let weight, weightGradient: Tensor
    let bias, biasGradient: Tensor?

    /// `layers` share their input width and all have a bias or none; `arena` holds their parameters in the
    /// order weights, then biases.
    public init(_ layers: [Linear], arena: ParameterArena) {
        precondition(!layers.isEmpty, "LinearStack: no layers")
        let inFeatures = layers[0].inFeatures, hasBias = layers[0].bias != nil
        precondition(layers.allSatisfy { $0.inFeatures == inFeatures && ($0.bias != nil) == hasBias },
                     "LinearStack: the layers must share their input width and all have a bias or none")
        self.layers = layers
        backend = arena.backend
        self.inFeatures = inFeatures
        let outFeatures = layers.map(\.outFeatures).reduce(0, +)
        weight = Self.span(layers.map { $0.weight.value }, shape: [outFeatures, inFeatures])
        weightGradient = Self.span(layers.map { $0.weight.gradient }, shape: [outFeatures, inFeatures])
        bias = hasBias ? Self.span(layers.map { $0.bias!.value }, shape: [outFeatures]) : nil
        biasGradient = hasBias ? Self.span(layers.map { $0.bias!.gradient }, shape: [outFeatures]) : nil
    }

    /// One view over tensors that follow each other in one buffer with no gap.
    private static func span(_ parts: [Tensor], shape: [Int]) -> Tensor {
        for (previous, next) in zip(parts, parts.dropFirst()) {
            precondition(next.buffer === previous.buffer && next.offset == previous.offset + previous.count,
                         "LinearStack: the layers' parameters are not back to back in one arena buffer")
        }
        return Tensor(shape: shape, dtype: parts[0].dtype, buffer: parts[0].buffer, offset: parts[0].offset)
    }

    /// x [..., in] → [..., Σ out].
    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.shape.last == inFeatures, "LinearStack: input \(x.shape) does not end in \(inFeatures)")
        return backend.linear(x, weight: weight, bias: bias, gelu: false).y
    }

    /// Accumulates every layer's dW and db from dy [..., Σ out] (one product, one column sum) and returns dx.
    public func backward(_ dy: Tensor, input x: Tensor) -> Tensor {
        let rows = dy.reshaped([-1, weight.shape[0]])
        backend.matmul(rows, x.reshaped([-1, inFeatures]), transposeA: true, transposeB: false, into: weightGradient,
                       alpha: 1, beta: 1)
        if let biasGradient { backend.accumulateBiasGradient(rows, into: biasGradient) }
        return backend.linearInputGradient(dy, weight: weight, geluInput: nil)
    }
}
