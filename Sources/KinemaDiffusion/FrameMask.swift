import KinemaTensor

/// An image-to-video frame mask (Open-Sora's mask conditioning), as rectified flow and IDDPM both use it: for
/// latents [B, C, F, …], `rows[b][f]` is true for a frame the model generates and false for a conditioning frame,
/// which stays clean in x_t, is left out of the loss, and is held at its given latents through sampling. Built once
/// per batch: the mask tensor is uploaded once and serves x_t and the loss alike.
public struct FrameMask {
    public let rows: [[Bool]]
    /// The rows broadcast to the latents' shape [B, C, F, …] as 1 (generated) and 0 (conditioning), in their dtype.
    public let tensor: Tensor

    public init(_ rows: [[Bool]], like x: Tensor, backend: any Backend) {
        precondition(x.rank >= 3, "frame masks need latents [B, C, F, …], got \(x.shape)")
        let batch = x.shape[0], channels = x.shape[1], frames = x.shape[2]
        let perFrame = x.shape.dropFirst(3).reduce(1, *)
        precondition(rows.count == batch && rows.allSatisfy { $0.count == frames },
                     "the frame mask must be [\(batch)][\(frames)] for latents \(x.shape)")
        var values = [Float](repeating: 0, count: x.count)
        for b in 0..<batch {
            for c in 0..<channels {
                for f in 0..<frames where rows[b][f] {
                    let start = ((b * channels + c) * frames + f) * perFrame
                    for e in start..<(start + perFrame) { values[e] = 1 }
                }
            }
        }
        self.rows = rows
        tensor = backend.upload(values, shape: x.shape, dtype: x.dtype)
    }

    /// x with the conditioning frames replaced by `clean`'s: clean + M ⊙ (x − clean).
    public func keepConditioningFrames(_ x: Tensor, clean: Tensor, backend: any Backend) -> Tensor {
        backend.add(clean, backend.mul(tensor, backend.sub(x, clean)))
    }

    /// Per sample, frames / generated frames (0 when it generates none): what turns a mean over all of a sample's
    /// elements, the conditioning frames' zeroed, into the mean over its generated frames (`mean_flat` with a mask).
    public var generatedShare: [Double] {
        rows.map { row in
            let generated = row.filter { $0 }.count
            return generated == 0 ? 0 : Double(row.count) / Double(generated)
        }
    }

    /// The rows of a batch whose samples each either keep their first frame (image-to-video) or generate all
    /// `frames`.
    public static func firstFrame(_ conditioned: [Bool], frames: Int) -> [[Bool]] {
        conditioned.map { keeps in (0..<frames).map { !(keeps && $0 == 0) } }
    }

    /// Per sample, what turns a mean over all of its elements into the mean over its generated frames: the
    /// mask's `generatedShare`, or 1 for every sample without a mask.
    static func share(_ mask: FrameMask?, batch: Int) -> [Double] {
        mask?.generatedShare ?? [Double](repeating: 1, count: batch)
    }

    /// Both objectives' regression term: (prediction − target)² averaged per sample over its generated frames
    /// (`mean_flat` with a mask; every element without one), and the gradient of the batch mean of those with
    /// respect to `prediction` (none on a conditioning frame).
    static func meanSquaredError(_ prediction: Tensor, target: Tensor, mask: FrameMask?,
                                 backend: any Backend) -> (perSample: [Double], gradient: Tensor) {
        let batch = prediction.shape[0], share = share(mask, batch: batch)
        // The conditioning frames of both sides zeroed, each sample's full-size mean weighted up to a mean over
        // its generated frames.
        let (means, gradient) = backend.meanSquaredError(mask.map { backend.mul(prediction, $0.tensor) } ?? prediction,
                                                         target: mask.map { backend.mul(target, $0.tensor) } ?? target,
                                                         weights: share.map { $0 / Double(batch) })
        return (zip(means, share).map { $0 * $1 }, gradient)
    }

    /// What a sampler applies after every step: x ↦ x with `condition`'s frames held at its latents (the identity
    /// without one). The mask is built once, for the whole loop.
    static func holding(_ condition: (latents: Tensor, frameMask: [[Bool]])?, backend: any Backend) -> (Tensor) -> Tensor {
        guard let condition else { return { $0 } }
        let mask = FrameMask(condition.frameMask, like: condition.latents, backend: backend)
        return { mask.keepConditioningFrames($0, clean: condition.latents, backend: backend) }
    }
}
