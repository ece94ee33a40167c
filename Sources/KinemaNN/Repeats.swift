import KinemaTensor

/// torch's `repeat_interleave(k, dim=0)` and its adjoint: the per-video conditioning of a video model repeated for
/// each of its frames (or patches), and the gradients of those copies summed back.
public enum Repeats {
    /// x [B, …] → [B·k, …]: each sample's row k times in a row.
    public static func interleave(_ x: Tensor, times k: Int, backend: any Backend) -> Tensor {
        if k == 1 { return x }
        let batch = x.shape[0], row = x.count / max(batch, 1)
        let copies = backend.concat([Tensor](repeating: x.reshaped([batch, 1, row]), count: k), axis: 1)
        return copies.reshaped([batch * k] + x.shape.dropFirst())
    }

    /// dy [B·k, …] → [B, …]: the sum of each sample's k copies, in dy's dtype.
    public static func sumInterleaved(_ dy: Tensor, times k: Int, backend: any Backend) -> Tensor {
        if k == 1 { return dy }
        let batch = dy.shape[0] / k, row = dy.count / max(dy.shape[0], 1)
        let byCopy = backend.permute(dy.reshaped([batch, k, row]), [1, 0, 2]).reshaped([k, batch * row])
        let sum = backend.zeros([batch * row], dtype: Parameter.gradientDType(for: dy.dtype))
        backend.accumulateBiasGradient(byCopy, into: sum)
        let shaped = sum.reshaped([batch] + dy.shape.dropFirst())
        return shaped.dtype == dy.dtype ? shaped : backend.cast(shaped, to: dy.dtype)
    }
}
