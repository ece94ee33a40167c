import KinemaTensor

/// Image-to-video frame masks (Open-Sora's mask conditioning), as rectified flow and IDDPM both use them: for
/// latents [B, C, F, …], `frameMask[b][f]` is true for a frame the model generates and false for a conditioning
/// frame, which stays clean in x_t, is left out of the loss, and is held at its given latents through sampling.
enum FrameMasks {
    /// x with the conditioning frames (mask false) replaced by `clean`'s: clean + M ⊙ (x − clean).
    static func keepConditioningFrames(_ x: Tensor, clean: Tensor, frameMask: [[Bool]], backend: any Backend) -> Tensor {
        holding((clean, frameMask), backend: backend)(x)
    }

    /// What a sampler applies after every step: x ↦ x with `condition`'s frames held at its latents (the identity
    /// without one). The mask is built once, for the whole loop.
    static func holding(_ condition: (latents: Tensor, frameMask: [[Bool]])?, backend: any Backend) -> (Tensor) -> Tensor {
        guard let condition else { return { $0 } }
        let mask = tensor(condition.frameMask, like: condition.latents, backend: backend)
        return { x in backend.add(condition.latents, backend.mul(mask, backend.sub(x, condition.latents))) }
    }

    /// The frame mask broadcast to x's shape [B, C, F, …] as 1 (generated) and 0 (conditioning), in x's dtype.
    static func tensor(_ frameMask: [[Bool]], like x: Tensor, backend: any Backend) -> Tensor {
        precondition(x.rank >= 3, "frame masks need latents [B, C, F, …], got \(x.shape)")
        let batch = x.shape[0], channels = x.shape[1], frames = x.shape[2]
        let perFrame = x.shape.dropFirst(3).reduce(1, *)
        precondition(frameMask.count == batch && frameMask.allSatisfy { $0.count == frames },
                     "the frame mask must be [\(batch)][\(frames)] for latents \(x.shape)")
        var values = [Float](repeating: 0, count: x.count)
        for b in 0..<batch {
            for c in 0..<channels {
                for f in 0..<frames where frameMask[b][f] {
                    let start = ((b * channels + c) * frames + f) * perFrame
                    for e in start..<(start + perFrame) { values[e] = 1 }
                }
            }
        }
        return backend.upload(values, shape: x.shape, dtype: x.dtype)
    }

    /// Per sample, frames / generated frames (0 when it generates none): what turns a mean over all of a sample's
    /// elements, the conditioning frames' zeroed, into the mean over its generated frames (`mean_flat` with a mask).
    static func generatedShare(_ frameMask: [[Bool]]) -> [Double] {
        frameMask.map { row in
            let generated = row.filter { $0 }.count
            return generated == 0 ? 0 : Double(row.count) / Double(generated)
        }
    }
}
