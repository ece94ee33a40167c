import KinemaNN
import KinemaTensor

/// Video tokens between their two groupings, for the models that attend within frames and then across them (Latte,
/// STDiT): [B·A, C, D] → [B·C, A, D], the rows of each sample regrouped. With (A, C) = (frames, patches), frame-major
/// tokens become one sequence of frames per patch; with (patches, frames), they go back.
func regroup(_ x: Tensor, batch: Int, _ a: Int, _ c: Int, backend: any Backend) -> Tensor {
    let d = x.shape[x.rank - 1]
    return backend.permute(x.reshaped([batch, a, c, d]), [0, 2, 1, 3]).reshaped([batch * c, a, d])
}

/// The temporal positions added to the per-patch frame sequences before the first temporal attention: the 1D sin-cos
/// over frame positions t / timeScale (Latte's temp_pos_embed: scale 1; Open-Sora's pos_embed_temporal: its
/// time_scale), one flattened [T·D] table per frame count, made on first use.
final class TemporalPositions {
    let backend: any Backend
    let dim: Int
    let dtype: DType
    let timeScale: Double
    private var tables: [Int: Tensor] = [:]

    init(backend: any Backend, dim: Int, dtype: DType, timeScale: Double = 1) {
        self.backend = backend
        self.dim = dim
        self.dtype = dtype
        self.timeScale = timeScale
    }

    /// sequences [B·S, T, D] plus the positions of their T frames (the same for every patch).
    func add(to sequences: Tensor) -> Tensor {
        let (rows, frames) = (sequences.shape[0], sequences.shape[1])
        return backend.addBias(sequences.reshaped([rows, frames * dim]), table(frames)).reshaped([rows, frames, dim])
    }

    private func table(_ frames: Int) -> Tensor {
        if let table = tables[frames] { return table }
        let positions = PositionalEmbedding.sinCos1D(dim: dim, positions: (0..<frames).map { Double($0) / timeScale })
        let table = backend.upload(positions, shape: [frames * dim], dtype: dtype)
        tables[frames] = table
        return table
    }
}
