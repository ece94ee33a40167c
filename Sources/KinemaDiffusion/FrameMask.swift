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

    /// What a sampler applies after every step: x ↦ x with `condition`'s frames held at its latents (the identity
    /// without one). The mask is built once, for the whole loop.
    static func holding(_ condition: (latents: Tensor, frameMask: [[Bool]])?, backend: any Backend) -> (Tensor) -> Tensor {
        guard let condition else { return { $0 } }
        let mask = FrameMask(condition.frameMask, like: condition.latents, backend: backend)
        return { mask.keepConditioningFrames($0, clean: condition.latents, backend: backend) }
    }
}
