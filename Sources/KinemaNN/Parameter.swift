import KinemaTensor

/// A trainable tensor and its gradient accumulator. Layers accumulate (+=) into `gradient` in their backward,
/// so the training loop zeroes it once per optimizer step (gradient accumulation needs nothing else) — except for
/// gradients written by one product (`gradientWrittenByProducts`): those the optimizer leaves as they are, marked
/// stale, and the step's first product overwrites them (β = 0), as PyTorch's gradients set to None are written, not
/// added to: the optimizer's pass then writes 4 bytes an element less, and the products read nothing back.
///
/// Inside a model that owns a `ParameterArena`, `value`, `gradient` and `master` are views of the arena's flat
/// buffers: the optimizer updates all parameters in one pass over them. Assign new weights with `load(_:backend:)`,
/// which writes through the views; assigning `value` itself detaches the parameter from the arena.
public final class Parameter {
    /// The full name in the original DiT (PyTorch state_dict) layout, e.g. "blocks.0.attn.qkv.weight".
    public let name: String
    /// The copy the layers compute with: f32, or bf16/f16 under mixed precision (then rewritten from `master`
    /// by every optimizer step).
    public var value: Tensor
    /// Same shape as `value`, zero-initialised, f32 (f64 for an f64 value, the precision of the gradient checks):
    /// under bf16 mixed precision the weights the layers use are bf16 copies but gradients accumulate (over
    /// layers and micro-batches) in f32, as the optimizer reads them.
    public var gradient: Tensor
    /// The f32 master weights when `value` is a lower-precision copy of them (nil when `value` is itself f32/f64).
    public internal(set) var master: Tensor?
    /// Set by a layer whose backward writes this gradient by products only (a linear layer's weight: dW = dyᵀ x):
    /// the optimizer may then leave it stale instead of zeroing it (`ParameterArena.consumeGradients`).
    public internal(set) var gradientWrittenByProducts = false
    /// The optimizer has read `gradient` and left its values there: they stand for zero. The next product into it
    /// overwrites (`productBeta()`); `ParameterArena.settleGradients` zeroes it if none comes before a flat read.
    public internal(set) var gradientIsStale = false

    public init(name: String, value: Tensor, backend: any Backend) {
        self.name = name
        self.value = value
        gradient = backend.zeros(value.shape, dtype: Self.gradientDType(for: value.dtype))
    }

    /// The dtype gradients accumulate in for weights of `dtype`.
    public static func gradientDType(for dtype: DType) -> DType {
        dtype == .f64 || !dtype.isFloatingPoint ? dtype : .f32
    }

    /// The full-precision weights: `master` when there is one, otherwise `value`. What the optimizer updates, the
    /// EMA follows and a checkpoint saves.
    public var weights: Tensor { master ?? value }

    public func zeroGradient(backend: any Backend) {
        backend.fill(gradient, with: 0)
        gradientIsStale = false
    }

    /// β for a product into `gradient` (gradient = β · gradient + product): 0 when it is stale, which this write
    /// ends, else 1.
    func productBeta() -> Double {
        defer { gradientIsStale = false }
        return gradientIsStale ? 0 : 1
    }

    /// Writes loaded weights (any float dtype, same shape): into the master exactly when there is one, and into
    /// the compute copy rounded once from it (from the source itself when it is the f32 master's precision).
    public func load(_ source: Tensor, backend: any Backend) {
        precondition(source.shape == value.shape,
                     "Parameter \(name): loading \(source.shape) into \(value.shape)")
        backend.awaitConcurrentWork()  // an EMA update may still read the master (CUDABackend.adamW)
        if let master {
            backend.copy(source, into: master)
            backend.copy(master, into: value)
        } else {
            backend.copy(source, into: value)
        }
    }
}

/// Anything that owns parameters; `parameters` lists them in a fixed order (the checkpoint and optimizer order).
public protocol Layer: AnyObject {
    var parameters: [Parameter] { get }
    /// Index ranges of `parameters` that a `ParameterArena` must store back to back (`packedRuns:`), because the
    /// layer runs them as one `LinearStack` product. Empty by default.
    var packedRuns: [Range<Int>] { get }
}

extension Layer {
    public var packedRuns: [Range<Int>] { [] }
}

/// The packed runs of layers whose parameters are listed one layer after the other, shifted to that combined list.
public func packedRuns(of layers: [Layer]) -> [Range<Int>] {
    var start = 0, runs: [Range<Int>] = []
    for layer in layers {
        runs += layer.packedRuns.map { ($0.lowerBound + start)..<($0.upperBound + start) }
        start += layer.parameters.count
    }
    return runs
}

extension Parameter {
    /// A parameter whose initial values come from the host (initializers produce f64 values).
    convenience init(name: String, shape: [Int], values: [Double], dtype: DType, backend: any Backend) {
        self.init(name: name, value: backend.upload(values, shape: shape, dtype: dtype), backend: backend)
    }

    /// A parameter filled with one value (zero biases, unit LayerNorm weights).
    convenience init(name: String, shape: [Int], constant: Double, dtype: DType, backend: any Backend) {
        let value = backend.empty(shape, dtype: dtype)
        backend.fill(value, with: constant)
        self.init(name: name, value: value, backend: backend)
    }
}

/// The random stream a parameter's default initial values come from: a stable (FNV-1a) hash of its name, so
/// every parameter draws independent values that do not depend on construction order. The model overwrites
/// whatever it initialises differently (DiT's adaLN zeros, its own seed).
public func initializerStream(for name: String) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
    return hash
}
