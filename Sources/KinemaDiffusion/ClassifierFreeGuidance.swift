import KinemaTensor

/// A class-conditional model: output for x at ORIGINAL timesteps with one class label per sample.
public typealias ConditionalDenoiser = (_ x: Tensor, _ timesteps: [Int], _ labels: [Int]) -> Tensor

/// Classifier-free guidance as DiT's `forward_with_cfg` does it.
///
/// The model runs once on a doubled batch [conditional half; unconditional half] whose two halves hold the same
/// x (labels: the classes, then the null class). On the first `guidedChannels` output channels the halves are
/// combined as ε = ε_u + s · (ε_c − ε_u) and the result is written to both halves; the remaining channels (the
/// learned variance, and any ε channel past `guidedChannels`) are kept as the model gives them for each half.
///
/// DiT's sample script guides only the first 3 channels ("for exact reproducibility reasons"; the standard
/// approach, which its comment names, guides all ε channels). Here the default is the standard one: all C ε
/// channels of a 2C output. Pass `guidedChannels: 3` to reproduce DiT's released samples.
public enum ClassifierFreeGuidance {
    /// `forward_with_cfg`'s combination on the output of the doubled batch [2N, K, …]: guided channels
    /// 0..<guidedChannels, duplicated to both halves, then channels guidedChannels..<K of each half unchanged.
    public static func combine(_ output: Tensor, scale: Double, guidedChannels: Int, backend: any Backend) -> Tensor {
        let (guided, rest) = guide(output, scale: scale, guidedChannels: guidedChannels, backend: backend)
        let both = backend.concat([guided, guided], axis: 0)
        guard let rest else { return both }
        return backend.concat([both, rest], axis: 1)
    }

    /// The conditional half of `combine` ([N, K, …]): what the conditional samples see.
    public static func combineConditionalHalf(_ output: Tensor, scale: Double, guidedChannels: Int,
                                              backend: any Backend) -> Tensor {
        let (guided, rest) = guide(output, scale: scale, guidedChannels: guidedChannels, backend: backend)
        guard let rest else { return guided }
        return backend.concat([guided, rest.slice(0..<guided.shape[0])], axis: 1)
    }

    /// A denoiser over N samples that guides `model` toward `labels` (one per sample, fixed for the whole run):
    /// each call runs the model once on [x; x] with timesteps [t; t] and labels [labels; nullLabel × N], and
    /// returns the conditional half of `combine`. Sampling the conditional half alone gives exactly the samples
    /// DiT keeps (its unconditional half never feeds back into the conditional one). With `scale == 1` guidance is
    /// the identity, so the model runs once on the plain batch with the labels.
    /// `guidedChannels` nil means all ε channels (C = x.shape[1]).
    public static func denoiser(model: @escaping ConditionalDenoiser, labels: [Int], nullLabel: Int, scale: Double,
                                guidedChannels: Int? = nil, backend: any Backend) -> Denoiser {
        if scale == 1 {
            return { x, timesteps in
                precondition(labels.count == x.shape[0], "guided denoiser: \(labels.count) labels for batch \(x.shape[0])")
                return model(x, timesteps, labels)
            }
        }
        return { x, timesteps in
            let batch = x.shape[0]
            precondition(labels.count == batch, "guided denoiser: \(labels.count) labels for batch \(batch)")
            let doubled = backend.concat([x, x], axis: 0)
            let output = model(doubled, timesteps + timesteps, labels + [Int](repeating: nullLabel, count: batch))
            return combineConditionalHalf(output, scale: scale, guidedChannels: guidedChannels ?? x.shape[1],
                                          backend: backend)
        }
    }

    /// The guided channels of the conditional half [N, g, …] and the unguided channels of both halves [2N, K − g, …].
    private static func guide(_ output: Tensor, scale: Double, guidedChannels: Int,
                              backend: any Backend) -> (guided: Tensor, rest: Tensor?) {
        precondition(output.rank >= 2 && output.shape[0] % 2 == 0,
                     "classifier-free guidance: output \(output.shape) is not a doubled batch")
        let channels = output.shape[1]
        precondition(guidedChannels >= 1 && guidedChannels <= channels,
                     "classifier-free guidance: \(guidedChannels) guided channels of \(channels)")
        let half = output.shape[0] / 2
        let epsilon = guidedChannels == channels
            ? output : backend.narrow(output, axis: 1, start: 0, length: guidedChannels)
        let conditional = epsilon.slice(0..<half), unconditional = epsilon.slice(half..<(2 * half))
        let difference = backend.sub(conditional, unconditional)
        let guided = backend.rowwiseAxpby([Double](repeating: 1, count: half), unconditional,
                                          [Double](repeating: scale, count: half), difference)
        let rest = guidedChannels == channels
            ? nil : backend.narrow(output, axis: 1, start: guidedChannels, length: channels - guidedChannels)
        return (guided, rest)
    }
}
