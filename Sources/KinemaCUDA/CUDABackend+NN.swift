import Foundation
import KinemaTensor

/// The NN op family on the GPU (f32 compute), kernels in `Kernels/NN.cu`. Matches the CPU backend: per-row
/// statistics and every reduction over rows or tokens accumulate in f64, in a fixed order (no atomics).
/// Attention is in CUDABackend+Attention.swift.
extension CUDABackend: NNOps {
    private static let null = UInt64(0)

    func requireF32(_ op: String, _ tensors: Tensor?...) {
        for case let t? in tensors {
            precondition(t.dtype == .f32, "\(op): the CUDA NN kernels compute f32 only, got \(t.dtype)")
        }
    }

    func sameShape(_ op: String, _ a: Tensor, _ b: Tensor) {
        precondition(a.shape == b.shape, "\(op): shapes differ: \(a.shape) vs \(b.shape)")
    }

    /// Blocks for a one-block-per-row kernel (the kernels loop over rows beyond the grid).
    func rowBlocks(_ rows: Int) -> Int { Swift.max(1, Swift.min(rows, 65_535 * 16)) }

    /// Threads for a one-block-per-row kernel of `width` elements: a power of two from 32 to 256.
    func rowThreads(_ width: Int) -> Int {
        var threads = 32
        while threads < 256 && threads < width { threads *= 2 }
        return threads
    }

    // MARK: LayerNorm

    public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Double) -> (y: Tensor, mean: Tensor, rstd: Tensor) {
        requireF32("layerNorm", x, weight, bias)
        let width = requireRowParameter("layerNorm", x, weight, bias)
        let rows = x.count / Swift.max(width, 1)
        let y = empty(x.shape, dtype: .f32)
        let mean = empty(Array(x.shape.dropLast()), dtype: .f32), rstd = empty(Array(x.shape.dropLast()), dtype: .f32)
        if rows > 0 && width > 0 {
            launch("layernorm_forward_f32", in: "NN", count: rows, blocks: rowBlocks(rows), threads: rowThreads(width),
                   [x, argument(weight), argument(bias), y, mean, rstd, Int64(rows), Int32(width), eps])
        }
        return (y, mean, rstd)
    }

    public func layerNormBackward(_ dy: Tensor, x: Tensor, weight: Tensor?, mean: Tensor, rstd: Tensor,
                                  dWeight: Tensor?, dBias: Tensor?) -> Tensor {
        requireF32("layerNormBackward", dy, x, weight, mean, rstd, dWeight, dBias)
        sameShape("layerNormBackward", dy, x)
        let width = requireRowParameter("layerNormBackward", x, weight, dWeight, dBias)
        precondition(dWeight == nil || weight != nil, "layerNormBackward: dWeight given without a weight")
        let rows = x.count / Swift.max(width, 1)
        precondition(mean.count == rows && rstd.count == rows,
                     "layerNormBackward: mean \(mean.shape) / rstd \(rstd.shape) do not fit \(x.shape)")
        let dx = empty(x.shape, dtype: .f32)
        guard rows > 0 && width > 0 else { return dx }
        launch("layernorm_backward_dx_f32", in: "NN", count: rows, blocks: rowBlocks(rows), threads: rowThreads(width),
               [dy, x, argument(weight), mean, rstd, dx, Int64(rows), Int32(width)])
        if dWeight != nil || dBias != nil {
            launch("layernorm_backward_params_f32", in: "NN", count: width, threads: 128,
                   [dy, x, mean, rstd, argument(dWeight), argument(dBias), Int64(rows), Int32(width)])
        }
        return dx
    }

    // MARK: adaLN modulation and gated residual

    public func modulate(_ x: Tensor, shift: Tensor, scale: Tensor) -> Tensor {
        requireF32("modulate", x, shift, scale)
        let (_, tokens, width) = tokenLayout("modulate", x, shift, scale)
        let y = empty(x.shape, dtype: .f32)
        if x.count > 0 {
            launch("modulate_f32", in: "NN", count: x.count, [x, shift, scale, y, Int64(tokens), Int32(width), Int64(x.count)])
        }
        return y
    }

    public func modulateBackward(_ dy: Tensor, x: Tensor, scale: Tensor) -> (dx: Tensor, dShift: Tensor, dScale: Tensor) {
        requireF32("modulateBackward", dy, x, scale)
        sameShape("modulateBackward", dy, x)
        let (batch, tokens, width) = tokenLayout("modulateBackward", x, scale)
        let dx = empty(x.shape, dtype: .f32)
        let dShift = empty(scale.shape, dtype: .f32), dScale = empty(scale.shape, dtype: .f32)
        if x.count > 0 {
            launch("modulate_backward_dx_f32", in: "NN", count: x.count,
                   [dy, scale, dx, Int64(tokens), Int32(width), Int64(x.count)])
        }
        tokenSums(dy, x, first: dShift, second: dScale, batch: batch, tokens: tokens, width: width)
        return (dx, dShift, dScale)
    }

    public func gatedResidual(_ x: Tensor, gate: Tensor, _ y: Tensor) -> Tensor {
        requireF32("gatedResidual", x, gate, y)
        sameShape("gatedResidual", x, y)
        let (_, tokens, width) = tokenLayout("gatedResidual", x, gate)
        let out = empty(x.shape, dtype: .f32)
        if x.count > 0 {
            launch("gated_residual_f32", in: "NN", count: x.count,
                   [x, gate, y, out, Int64(tokens), Int32(width), Int64(x.count)])
        }
        return out
    }

    public func gatedResidualBackward(_ dOut: Tensor, gate: Tensor, y: Tensor) -> (dGate: Tensor, dY: Tensor) {
        requireF32("gatedResidualBackward", dOut, gate, y)
        sameShape("gatedResidualBackward", dOut, y)
        let (batch, tokens, width) = tokenLayout("gatedResidualBackward", y, gate)
        let dY = empty(y.shape, dtype: .f32), dGate = empty(gate.shape, dtype: .f32)
        if y.count > 0 {
            launch("gated_residual_backward_dy_f32", in: "NN", count: y.count,
                   [dOut, gate, dY, Int64(tokens), Int32(width), Int64(y.count)])
        }
        // dGate[b, d] = Σ_n dOut · y: the kernel's second sum (its first, Σ dOut, is not wanted).
        tokenSums(dOut, y, first: nil, second: dGate, batch: batch, tokens: tokens, width: width)
        return (dGate, dY)
    }

    /// first[b, j] = Σ_n a, second[b, j] = Σ_n a · c over the tokens of [B, N, D] data.
    private func tokenSums(_ a: Tensor, _ c: Tensor, first: Tensor?, second: Tensor?, batch: Int, tokens: Int, width: Int) {
        guard batch * width > 0 else { return }
        launch("token_sums_f32", in: "NN", count: batch * width, threads: 128,
               [a, c, argument(first), argument(second), Int32(batch), Int64(tokens), Int32(width)])
    }

    // MARK: Activations

    private func pointwise(_ name: String, _ op: String, _ inputs: Tensor...) -> Tensor {
        for t in inputs { requireF32(op, t); sameShape(op, inputs[0], t) }
        let out = empty(inputs[0].shape, dtype: .f32)
        if out.count > 0 {
            launch(name, in: "NN", count: out.count, inputs.map { $0 as any KernelArgument } + [out, Int64(out.count)])
        }
        return out
    }

    public func gelu(_ x: Tensor) -> Tensor { pointwise("gelu_f32", "gelu", x) }
    public func geluBackward(_ dy: Tensor, x: Tensor) -> Tensor { pointwise("gelu_backward_f32", "geluBackward", dy, x) }
    public func silu(_ x: Tensor) -> Tensor { pointwise("silu_f32", "silu", x) }
    public func siluBackward(_ dy: Tensor, x: Tensor) -> Tensor { pointwise("silu_backward_f32", "siluBackward", dy, x) }

    // MARK: Embeddings

    public func embedding(_ table: Tensor, indices: Tensor) -> Tensor {
        requireF32("embedding", table)
        let width = checkedEmbedding("embedding", table, indices)
        let out = empty(indices.shape + [width], dtype: .f32)
        if out.count > 0 {
            launch("embedding_f32", in: "NN", count: out.count, [table, indices, out, Int32(width), Int64(out.count)])
        }
        return out
    }

    public func embeddingBackward(_ dOut: Tensor, indices: Tensor, into dTable: Tensor) {
        requireF32("embeddingBackward", dOut, dTable)
        let width = checkedEmbedding("embeddingBackward", dTable, indices)
        precondition(dOut.shape == indices.shape + [width],
                     "embeddingBackward: dOut \(dOut.shape) does not fit indices \(indices.shape) and table \(dTable.shape)")
        guard width > 0 && indices.count > 0 else { return }
        launch("embedding_backward_f32", in: "NN", count: width, threads: 128,
               [dOut, indices, dTable, Int32(width), Int64(indices.count)])
    }

    /// Checks the table is [V, D] and the indices i32 within 0..<V (read back: indices are a few per batch); returns D.
    private func checkedEmbedding(_ op: String, _ table: Tensor, _ indices: Tensor) -> Int {
        precondition(table.rank == 2, "\(op): the table must be [V, D], got \(table.shape)")
        precondition(indices.dtype == .i32, "\(op): indices must be i32, got \(indices.dtype)")
        let rows = table.shape[0]
        let index = downloadBytes(indices).withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
        for (i, value) in index.enumerated() {
            precondition(value >= 0 && Int(value) < rows,
                         "\(op): index \(value) at position \(i) is outside the table's \(rows) rows")
        }
        return table.shape[1]
    }

    public func timestepEmbedding(_ t: Tensor, dim: Int, maxPeriod: Double, frequencyShift: Double) -> Tensor {
        requireF32("timestepEmbedding", t)
        precondition(t.rank == 1 && dim > 0, "timestepEmbedding: t must be [B] and dim positive, got \(t.shape), \(dim)")
        let half = dim / 2
        let out = empty([t.shape[0], dim], dtype: .f32)
        // Frequencies in f64 rounded once to f32 (as the CPU backend does); product and trig in f32 on the device.
        let frequencies = (0..<Swift.max(half, 1)).map {
            Foundation.exp(-Foundation.log(maxPeriod) * Double($0) / (Double(half) - frequencyShift))
        }
        let table = upload(frequencies, shape: [frequencies.count], dtype: .f32)
        if out.count > 0 {
            launch("timestep_embedding_f32", in: "NN", count: out.count,
                   [t, table, out, Int32(dim), Int32(half), Int64(out.count)])
        }
        return out
    }

    // MARK: Helpers

    /// A tensor's device address, or a null pointer for nil.
    func argument(_ tensor: Tensor?) -> any KernelArgument { tensor.map { $0 as any KernelArgument } ?? Self.null }

    /// Checks that x is [B, N..., D] and every per-sample tensor is [B, D]; returns (B, N, D).
    private func tokenLayout(_ op: String, _ x: Tensor, _ perSample: Tensor...) -> (Int, Int, Int) {
        precondition(x.rank >= 2, "\(op): x must be [B, N..., D], got \(x.shape)")
        let batch = x.shape[0], width = x.shape[x.rank - 1]
        for t in perSample {
            precondition(t.shape == [batch, width],
                         "\(op): per-sample tensor \(t.shape) does not fit x \(x.shape) (want [\(batch), \(width)])")
        }
        return (batch, x.count / Swift.max(batch * width, 1), width)
    }

    /// Checks that each given tensor is a [D] vector, D = x's last axis; returns D.
    private func requireRowParameter(_ op: String, _ x: Tensor, _ vectors: Tensor?...) -> Int {
        precondition(x.rank >= 1, "\(op): x must have rank ≥ 1")
        let width = x.shape[x.rank - 1]
        for case let v? in vectors {
            precondition(v.shape == [width], "\(op): \(v.shape) does not fit the last axis of \(x.shape)")
        }
        return width
    }
}
