import Foundation

public enum PositionalEmbedding {
    /// DiT/MAE fixed 2D sin-cos table [gridHeight·gridWidth, dim] as host floats, row-major over (h, w); as in MAE's get_2d_sincos_pos_embed:
    /// the first dim/2 channels encode the column (w) coordinate, the second dim/2 the row (h) coordinate; each 1D half is [sin(pos·ω), cos(pos·ω)], ω_i = 1/10000^(i/(dim/4)).
    ///
    /// MAE builds `meshgrid(grid_w, grid_h)`, whose first plane varies along w, and embeds that plane first
    /// (under the name emb_h). A non-square grid follows the same recipe with arange(gridHeight) and
    /// arange(gridWidth).
    ///
    /// `baseSize` (diffusers' PatchEmbed, PixArt): positions are scaled to a grid of that size, h · base / (H · i)
    /// and w · base / (W · i) with i the interpolation scale, so a model trained at one resolution sees the same
    /// position range at any other; nil keeps the positions h / i and w / i (DiT: i = 1; Open-Sora's space_scale).
    public static func sinCos2D(dim: Int, gridHeight: Int, gridWidth: Int, baseSize: Int? = nil,
                                interpolationScale: Double = 1) -> [Double] {
        precondition(dim > 0 && dim % 4 == 0, "sinCos2D: dim \(dim) must be a positive multiple of 4")
        var table = [Double](repeating: 0, count: gridHeight * gridWidth * dim)
        for h in 0..<gridHeight {
            for w in 0..<gridWidth {
                let positions = baseSize.map { base in
                    [Double(w) * Double(base) / (Double(gridWidth) * interpolationScale),
                     Double(h) * Double(base) / (Double(gridHeight) * interpolationScale)]
                } ?? [Double(w) / interpolationScale, Double(h) / interpolationScale]
                for (half, position) in positions.enumerated() {
                    write(position, dim: dim / 2, into: &table, at: (h * gridWidth + w) * dim + half * dim / 2)
                }
            }
        }
        return table
    }

    /// The 1D table [positions.count, dim] (diffusers' get_1d_sincos_pos_embed_from_grid; Latte's frame
    /// positions): [sin(pos·ω), cos(pos·ω)] with ω_i = 1/10000^(i/(dim/2)).
    public static func sinCos1D(dim: Int, positions: [Double]) -> [Double] {
        precondition(dim > 0 && dim % 2 == 0, "sinCos1D: dim \(dim) must be a positive multiple of 2")
        var table = [Double](repeating: 0, count: positions.count * dim)
        for (index, position) in positions.enumerated() { write(position, dim: dim, into: &table, at: index * dim) }
        return table
    }

    /// One position's [sin(pos·ω), cos(pos·ω)], dim wide, at `start`.
    private static func write(_ position: Double, dim: Int, into table: inout [Double], at start: Int) {
        let half = dim / 2
        for i in 0..<half {
            let angle = position / pow(10000, Double(i) / Double(half))
            table[start + i] = sin(angle)
            table[start + half + i] = cos(angle)
        }
    }
}
