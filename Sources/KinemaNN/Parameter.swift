import KinemaTensor

/// A trainable tensor and its gradient accumulator. Layers accumulate (+=) into `gradient` in their backward,
/// so the training loop zeroes it once per optimizer step (gradient accumulation needs nothing else).
public final class Parameter {
    /// The full name in the original DiT (PyTorch state_dict) layout, e.g. "blocks.0.attn.qkv.weight".
    public let name: String
    public var value: Tensor
    /// Same shape as `value`, zero-initialised, f32 for any half-precision value (f64 for f64): under bf16 mixed
    /// precision the weights the layers use are bf16 copies but gradients accumulate (over layers and
    /// micro-batches) in f32, as the optimizer reads them.
    public var gradient: Tensor

    public init(name: String, value: Tensor, backend: any Backend) {
        self.name = name
        self.value = value
        gradient = backend.zeros(value.shape, dtype: value.dtype == .bf16 || value.dtype == .f16 ? .f32 : value.dtype)
    }

    public func zeroGradient(backend: any Backend) {
        backend.fill(gradient, with: 0)
    }
}

/// Anything that owns parameters; `parameters` lists them in a fixed order (the checkpoint and optimizer order).
public protocol Layer: AnyObject {
    var parameters: [Parameter] { get }
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
func initializerStream(for name: String) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
    return hash
}
