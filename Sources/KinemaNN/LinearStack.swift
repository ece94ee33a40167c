import KinemaTensor

/// Linear layers that read one input, run as one: y = x [W₀; W₁; …]ᵀ + [b₀; b₁; …], the layers' outputs side by
/// side along the last axis. Their weights (and biases) must lie back to back in an arena — the layers' parameters
/// consecutive in its order, weights first, then biases — so the stacked matrix is a view of the arena, not a copy:
/// the layers keep their own names and checkpoints, and one product replaces one per layer (DiT's adaLN
/// modulations: every block reads the same SiLU(c)).
public struct LinearStack {
    let layers: [Linear]
    let backend: any Backend
    let inFeatures: Int
    /// [Σ out, in] and [Σ out] views of the arena's values and gradients.
    let weight, weightGradient: Tensor
    let bias, biasGradient: Tensor?

    /// `layers` share their input width and all have a bias or none; an arena holds their parameters in the
    /// order weights, then biases (`ParameterArena(packedRuns:)`).
    public init(_ layers: [Linear], backend: any Backend) {
        precondition(!layers.isEmpty, "LinearStack: no layers")
        let inFeatures = layers[0].inFeatures, hasBias = layers[0].bias != nil
        precondition(layers.allSatisfy { $0.inFeatures == inFeatures && ($0.bias != nil) == hasBias },
                     "LinearStack: the layers must share their input width and all have a bias or none")
        self.layers = layers
        self.backend = backend
        self.inFeatures = inFeatures
        let outFeatures = layers.map(\.outFeatures).reduce(0, +)
        weight = Self.span(layers.map { $0.weight.value }, shape: [outFeatures, inFeatures])
        weightGradient = Self.span(layers.map { $0.weight.gradient }, shape: [outFeatures, inFeatures])
        bias = hasBias ? Self.span(layers.map { $0.bias!.value }, shape: [outFeatures]) : nil
        biasGradient = hasBias ? Self.span(layers.map { $0.bias!.gradient }, shape: [outFeatures]) : nil
    }

    /// One view over tensors that follow each other in one buffer with no gap.
    private static func span(_ parts: [Tensor], shape: [Int]) -> Tensor {
        let view = Tensor(shape: shape, dtype: parts[0].dtype, buffer: parts[0].buffer, offset: parts[0].offset)
        precondition(isSpanned(by: view, parts),
                     "LinearStack: the parameters of \(parts.count) stacked tensors are not back to back in one arena "
                     + "buffer; build the model's ParameterArena with the layers' packedRuns")
        return view
    }

    /// Whether `parts` lie back to back from the start of `view`, in its buffer.
    private static func isSpanned(by view: Tensor, _ parts: [Tensor]) -> Bool {
        var offset = view.offset
        for part in parts {
            guard part.buffer === view.buffer && part.offset == offset else { return false }
            offset += part.count
        }
        return offset == view.offset + view.count
    }

    /// x [..., in] → [..., Σ out].
    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.shape.last == inFeatures, "LinearStack: input \(x.shape) does not end in \(inFeatures)")
        precondition(Self.isSpanned(by: weight, layers.map { $0.weight.value })
                     && bias.map { Self.isSpanned(by: $0, layers.map { $0.bias!.value }) } ?? true,
                     "LinearStack: a layer's parameter was replaced by a new tensor, which the stacked view does not "
                     + "see; write new values into the parameter's storage (backend.copy(_:into:)) instead")
        return backend.linear(x, weight: weight, bias: bias, gelu: false).y
    }

    /// Accumulates every layer's dW and db from dy [..., Σ out] (one product; db with the input gradient's) and
    /// returns dx.
    public func backward(_ dy: Tensor, input x: Tensor) -> Tensor {
        let rows = dy.reshaped([-1, weight.shape[0]])
        // The stacked weights are consumed and written together: one β for the span.
        let betas = layers.map { $0.weight.productBeta() }
        precondition(Set(betas).count == 1,
                     "LinearStack: the stacked weights' gradients are not all stale or all written")
        backend.matmul(rows, x.reshaped([-1, inFeatures]), transposeA: true, transposeB: false, into: weightGradient,
                       alpha: 1, beta: betas[0])
        return backend.linearInputGradient(dy, weight: weight, geluInput: nil, biasGradient: biasGradient)
    }
}
