import KinemaTensor

/// DiT's TimestepEmbedder: sinusoidal features of t (frequencyDim wide) → mlp.0 Linear(frequencyDim, D) → SiLU
/// → mlp.2 Linear(D, D). Default initial values are DiT's: N(0, 0.02²) weights, zero biases.
public final class TimestepEmbedder: Layer {
    public struct Cache {
        /// The sinusoidal features [B, frequencyDim], mlp.0's output (SiLU's input) and SiLU's output.
        public let frequencies, hidden, activated: Tensor
    }

    public let linear1: Linear
    public let linear2: Linear
    public let frequencyDim: Int
    public let maxPeriod: Double
    /// 0 for the original DiT, 1 for diffusers (see `NNOps.timestepEmbedding`).
    public let frequencyShift: Double
    let backend: any Backend

    public var parameters: [Parameter] { linear1.parameters + linear2.parameters }

    /// `layerNames`: the two linears' names under `name` (DiT's "mlp.0"/"mlp.2"; diffusers' TimestepEmbedding
    /// calls them "linear_1"/"linear_2").
    public init(backend: any Backend, name: String, dim: Int, frequencyDim: Int = 256, maxPeriod: Double = 10000,
                frequencyShift: Double = 0, layerNames: (String, String) = ("mlp.0", "mlp.2"), dtype: DType,
                seed: UInt64 = 0) {
        self.backend = backend
        self.frequencyShift = frequencyShift
        self.frequencyDim = frequencyDim
        self.maxPeriod = maxPeriod
        // Built empty (zero) and filled once with DiT's N(0, 0.02²), rather than drawn Xavier and overwritten.
        linear1 = Linear(backend: backend, name: "\(name).\(layerNames.0)", inFeatures: frequencyDim, outFeatures: dim, dtype: dtype,
                         zeroInitialized: true)
        linear2 = Linear(backend: backend, name: "\(name).\(layerNames.1)", inFeatures: dim, outFeatures: dim, dtype: dtype,
                         zeroInitialized: true)
        for weight in [linear1.weight, linear2.weight] {
            weight.value = backend.upload(Initializers.normal(count: weight.value.count, std: 0.02, seed: seed,
                                                              stream: initializerStream(for: weight.name)),
                                          shape: weight.value.shape, dtype: dtype)
        }
    }

    /// t: [B] timesteps → [B, D]. The features are computed from f32 (f64 in an f64 layer) timesteps and then
    /// cast to the weights' compute dtype: a bf16 timestep could not tell 999 from 1000.
    public func forward(_ t: Tensor) -> (Tensor, Cache) {
        let compute = linear1.weight.value.dtype
        let timeType: DType = compute == .f64 ? .f64 : .f32
        let times = t.dtype == timeType ? t : backend.cast(t, to: timeType)
        let features = backend.timestepEmbedding(times, dim: frequencyDim, maxPeriod: maxPeriod,
                                                 frequencyShift: frequencyShift)
        let frequencies = features.dtype == compute ? features : backend.cast(features, to: compute)
        let hidden = linear1.forward(frequencies)
        let activated = backend.silu(hidden)
        return (linear2.forward(activated), Cache(frequencies: frequencies, hidden: hidden, activated: activated))
    }

    /// Accumulates the parameter gradients; timesteps are data, so no input gradient is formed.
    public func backward(_ dy: Tensor, _ cache: Cache) {
        let dActivated = linear2.backward(dy, input: cache.activated)
        let dHidden = backend.siluBackward(dActivated, x: cache.hidden)
        linear1.accumulateGradients(dHidden, input: cache.frequencies)
    }
}

/// DiT's LabelEmbedder: a table [numClasses (+1), D]; with label dropout (p > 0) the extra last row is the null
/// class, index numClasses, that classifier-free guidance samples with. Default values: N(0, 0.02²) as in DiT.
public final class LabelEmbedder: Layer {
    public let table: Parameter
    public let numClasses: Int
    public let dropoutProbability: Double
    let backend: any Backend

    public var parameters: [Parameter] { [table] }

    public init(backend: any Backend, name: String, numClasses: Int, dim: Int, dropoutProbability: Double, dtype: DType,
                seed: UInt64 = 0) {
        precondition(dropoutProbability >= 0 && dropoutProbability <= 1, "\(name): dropout probability \(dropoutProbability)")
        self.backend = backend
        self.numClasses = numClasses
        self.dropoutProbability = dropoutProbability
        let rows = numClasses + (dropoutProbability > 0 ? 1 : 0), tableName = "\(name).embedding_table.weight"
        table = Parameter(name: tableName, shape: [rows, dim],
                          values: Initializers.normal(count: rows * dim, std: 0.02, seed: seed,
                                                      stream: initializerStream(for: tableName)),
                          dtype: dtype, backend: backend)
    }

    /// Training-time label dropout: each label becomes the null class with probability p, one uniform draw per
    /// label in order (as DiT's torch.rand(B) < p). With p = 0 there is no null class: labels pass unchanged
    /// and nothing is drawn.
    public func dropLabels(_ labels: [Int32], random: inout RandomStream) -> [Int32] {
        guard dropoutProbability > 0 else { return labels }
        return labels.map { label in Double(random.nextUniform()) < dropoutProbability ? Int32(numClasses) : label }
    }

    /// labels: i32 [B] → [B, D].
    public func forward(_ labels: Tensor) -> Tensor {
        backend.embedding(table.value, indices: labels)
    }

    /// Accumulates dy's rows into the rows of the table the labels picked.
    public func backward(_ dy: Tensor, labels: Tensor) {
        backend.embeddingBackward(dy, indices: labels, into: table.gradient)
    }
}
