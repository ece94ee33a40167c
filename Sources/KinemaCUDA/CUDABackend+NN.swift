import Foundation
import KinemaTensor

/// The NN op family on the GPU, kernels in `Kernels/NN.cu`, each built for f32 and for bf16 activations (computed
/// in f32; LayerNorm statistics, parameter gradients and every reduction stay f32). Reductions run in a fixed order
/// (no atomics), so results repeat bit for bit. Attention is in CUDABackend+Attention.swift.
extension CUDABackend: NNOps {
    private static let null = UInt64(0)

    func requireF32(_ op: String, _ tensors: Tensor?...) {
        for case let t? in tensors {
            precondition(t.dtype == .f32, "\(op): the CUDA NN kernels compute f32 only, got \(t.dtype)")
        }
    }

    /// Checks that every given tensor has the element type of the first (f32 or bf16); returns it.
    @discardableResult
    private func requireElement(_ op: String, _ tensors: Tensor?...) -> DType {
        let element = tensors.compactMap { $0 }.first!.dtype
        precondition(Self.elementTypes.contains(element), "\(op): the CUDA NN kernels take f32 or bf16, not \(element)")
        for case let t? in tensors {
            precondition(t.dtype == element, "\(op): mixed element types \(element) and \(t.dtype)")
        }
        return element
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

    /// Whether kernels may read rows of `width` elements of these tensors in 16-byte packs of 8: the width is a
    /// multiple of 8 and every tensor starts 16-byte aligned (a view at an odd offset does not).
    func packs(width: Int, _ tensors: Tensor?...) -> Int32 {
        width % 8 == 0 && tensors.allSatisfy { $0.map { Int(bitPattern: $0.address) % 16 == 0 } ?? true } ? 1 : 0
    }

    // MARK: Row kernels (NN.cu): one warp per row, the row in registers

    /// The pack counts NN.cu instantiates its row kernels for (ROW_KERNELS): a lane holds P packs of 8 columns.
    private static let rowPackCounts = [1, 2, 3, 4, 5, 6, 8, 12, 16]
    /// Each row kernel's entry points, one per pack count, named once (not per launch).
    private static let rowKernelNames = Dictionary(uniqueKeysWithValues:
        ["layernorm_forward", "layernorm_backward"].map { name in
            (name, rowPackCounts.map { "\(name)_\($0)" })
        })

    /// The entry point of row kernel `name` for rows of `width` columns: the smallest instantiated pack count that
    /// holds a row.
    private func rowKernel(_ name: String, width: Int) -> String {
        let needed = (width + 255) / 256
        guard let index = Self.rowPackCounts.firstIndex(where: { $0 >= needed }) else {
            preconditionFailure("\(name) on CUDA: rows of \(width) columns; the row kernels hold at most "
                                + "\(256 * Self.rowPackCounts.last!) (add a larger count to NN.cu's ROW_KERNELS and rowPackCounts)")
        }
        return Self.rowKernelNames[name]![index]
    }

    // MARK: LayerNorm, alone, fused with adaLN modulation, and fused with the gated residual before it

    public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Double) -> (y: Tensor, mean: Tensor, rstd: Tensor) {
        let element = requireElement("layerNorm", x, weight, bias)
        let width = requireRowParameter("layerNorm", x, weight, bias)
        let (y, mean, rstd) = layerNormForward(x, weight, bias, eps: eps, tokens: 1, modulation: false, element: element,
                                               width: width)
        return (y, mean!, rstd)
    }

    public func layerNormModulate(_ x: Tensor, shift: Tensor, scale: Tensor, eps: Double) -> (y: Tensor, mean: Tensor, rstd: Tensor) {
        let element = requireElement("layerNormModulate", x, shift, scale)
        let (_, tokens, width) = tokenLayout("layerNormModulate", x, shift, scale)
        let (y, mean, rstd) = layerNormForward(x, scale, shift, eps: eps, tokens: tokens, modulation: true,
                                               element: element, width: width)
        return (y, mean!, rstd)
    }

    public func gatedResidualLayerNormModulate(_ x: Tensor, gate: Tensor, _ y: Tensor, shift: Tensor, scale: Tensor,
                                               eps: Double) -> (sum: Tensor, y: Tensor, mean: Tensor, rstd: Tensor) {
        let element = requireElement("gatedResidualLayerNormModulate", x, gate, y, shift, scale)
        sameShape("gatedResidualLayerNormModulate", x, y)
        let (_, tokens, width) = tokenLayout("gatedResidualLayerNormModulate", x, gate, shift, scale)
        let sum = empty(x.shape, dtype: element)
        let (normed, mean, rstd) = layerNormForward(x, scale, shift, eps: eps, tokens: tokens, modulation: true,
                                                    element: element, width: width, gated: (gate, y, sum))
        return (sum, normed, mean!, rstd)
    }

    public func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Double) -> (y: Tensor, rstd: Tensor) {
        let element = requireElement("rmsNorm", x, weight)
        let width = requireRowParameter("rmsNorm", x, weight)
        let (y, _, rstd) = layerNormForward(x, weight, nil, eps: eps, tokens: 1, modulation: false, element: element,
                                            width: width, centered: false)
        return (y, rstd)
    }

    /// The one LayerNorm kernel: per-row (a, b) = (weight, bias), or per-sample (1 + scale, shift) when `modulation`;
    /// with `gated`, of the gated residual x + gate ⊙ branch, which it also writes to `sum`. Not `centered`: RMSNorm
    /// (the kernel is given no mean to write, and none is returned).
    private func layerNormForward(_ x: Tensor, _ a: Tensor?, _ b: Tensor?, eps: Double, tokens: Int, modulation: Bool,
                                  element: DType, width: Int, gated: (gate: Tensor, branch: Tensor, sum: Tensor)? = nil,
                                  centered: Bool = true)
        -> (y: Tensor, mean: Tensor?, rstd: Tensor) {
        let rows = x.count / Swift.max(width, 1)
        let y = empty(x.shape, dtype: element)
        let mean = centered ? empty(Array(x.shape.dropLast()), dtype: .f32) : nil
        let rstd = empty(Array(x.shape.dropLast()), dtype: .f32)
        if rows > 0 && width > 0 {
            // One warp per row, 8 per block.
            launch(rowKernel("layernorm_forward", width: width), in: "NN", element: element, count: rows * 32,
                   blocks: Swift.max(1, Swift.min((rows + 7) / 8, 65_535 * 4)), threads: 256,
                   [x, argument(gated?.branch), argument(gated?.gate), argument(gated?.sum), argument(a), argument(b),
                    y, argument(mean), rstd, Int64(rows), Int32(width), eps, Int64(tokens), Int32(modulation ? 1 : 0),
                    packs(width: width, x, gated?.branch, gated?.gate, gated?.sum, a, b, y)])
        }
        return (y, mean, rstd)
    }

    public func layerNormBackward(_ dy: Tensor, x: Tensor, weight: Tensor?, mean: Tensor, rstd: Tensor,
                                  dWeight: Tensor?, dBias: Tensor?) -> Tensor {
        normalizeRowsBackward("layerNormBackward", dy, x: x, weight: weight, mean: mean, rstd: rstd, dWeight: dWeight,
                              dBias: dBias)
    }

    public func rmsNormBackward(_ dy: Tensor, x: Tensor, weight: Tensor?, rstd: Tensor, dWeight: Tensor?) -> Tensor {
        normalizeRowsBackward("rmsNormBackward", dy, x: x, weight: weight, mean: nil, rstd: rstd, dWeight: dWeight,
                              dBias: nil)
    }

    /// LayerNorm's backward kernel, or RMSNorm's when given no mean.
    private func normalizeRowsBackward(_ op: String, _ dy: Tensor, x: Tensor, weight: Tensor?, mean: Tensor?,
                                       rstd: Tensor, dWeight: Tensor?, dBias: Tensor?) -> Tensor {
        let element = requireElement(op, dy, x, weight)
        requireF32(op, mean, rstd, dWeight, dBias)
        sameShape(op, dy, x)
        let width = requireRowParameter(op, x, weight, dWeight, dBias)
        precondition(dWeight == nil || weight != nil, "\(op): dWeight given without a weight")
        let rows = x.count / Swift.max(width, 1)
        precondition((mean?.count ?? rows) == rows && rstd.count == rows,
                     "\(op): mean \(mean?.shape ?? []) / rstd \(rstd.shape) do not fit \(x.shape)")
        let dx = empty(x.shape, dtype: element)
        // dBias = Σ_rows dy, dWeight = Σ_rows dy · x̂, accumulated: every row one "sample".
        launchTokenRuns("layernorm_backward", element: element, segments: 1, tokens: rows, width: width,
                        first: dBias, second: dWeight, accumulate: true,
                        [dy, x, argument(weight), argument(mean), rstd, Self.null, dx],
                        then: [Int32(0), packs(width: width, dy, x, weight, dx)])
        return dx
    }

    public func layerNormModulateBackward(_ dy: Tensor, x: Tensor, scale: Tensor, mean: Tensor, rstd: Tensor, eps: Double,
                                          residual: Tensor?) -> (dx: Tensor, dShift: Tensor, dScale: Tensor) {
        let element = requireElement("layerNormModulateBackward", dy, x, scale, residual)
        requireF32("layerNormModulateBackward", mean, rstd)
        sameShape("layerNormModulateBackward", dy, x)
        if let residual { sameShape("layerNormModulateBackward", residual, x) }
        let (batch, tokens, width) = tokenLayout("layerNormModulateBackward", x, scale)
        let dx = empty(x.shape, dtype: element)
        // dShift = Σ_tokens dy, dScale = Σ_tokens dy · x̂ per sample (the modulation's own gradients, in T: they
        // flow on into the adaLN linear's backward).
        let dShift = empty(scale.shape, dtype: element), dScale = empty(scale.shape, dtype: element)
        launchTokenRuns("layernorm_backward", element: element, segments: batch, tokens: tokens, width: width,
                        first: dShift, second: dScale, accumulate: false,
                        [dy, x, scale, mean, rstd, argument(residual), dx],
                        then: [Int32(1), packs(width: width, dy, x, scale, residual, dx)])
        return (dx, dShift, dScale)
    }

    // MARK: adaLN modulation and gated residual

    public func modulate(_ x: Tensor, shift: Tensor, scale: Tensor) -> Tensor {
        let element = requireElement("modulate", x, shift, scale)
        let (_, tokens, width) = tokenLayout("modulate", x, shift, scale)
        let y = empty(x.shape, dtype: element)
        if x.count > 0 {
            launch("modulate", in: "NN", element: element, count: x.count,
                   [x, shift, scale, y, Int64(tokens), Int32(width), Int64(x.count)])
        }
        return y
    }

    public func modulateBackward(_ dy: Tensor, x: Tensor, scale: Tensor) -> (dx: Tensor, dShift: Tensor, dScale: Tensor) {
        let element = requireElement("modulateBackward", dy, x, scale)
        sameShape("modulateBackward", dy, x)
        let (batch, tokens, width) = tokenLayout("modulateBackward", x, scale)
        let dShift = empty(scale.shape, dtype: element), dScale = empty(scale.shape, dtype: element)
        let dx = perSampleScaleBackward(dy, x, scale, add: 1, first: dShift, second: dScale, batch: batch, tokens: tokens,
                                        width: width)
        return (dx, dShift, dScale)
    }

    public func gatedResidual(_ x: Tensor, gate: Tensor, _ y: Tensor) -> Tensor {
        let element = requireElement("gatedResidual", x, gate, y)
        sameShape("gatedResidual", x, y)
        let (_, tokens, width) = tokenLayout("gatedResidual", x, gate)
        let out = empty(x.shape, dtype: element)
        if x.count > 0 {
            launch("gated_residual", in: "NN", element: element, count: width % 8 == 0 ? (x.count + 7) / 8 : x.count,
                   [x, gate, y, out, Int64(tokens), Int32(width), Int64(x.count), packs(width: width, x, gate, y, out)])
        }
        return out
    }

    public func gatedResidualBackward(_ dOut: Tensor, gate: Tensor, y: Tensor,
                                      biasGradient: Tensor?) -> (dGate: Tensor, dY: Tensor) {
        let element = requireElement("gatedResidualBackward", dOut, gate, y)
        sameShape("gatedResidualBackward", dOut, y)
        let (batch, tokens, width) = tokenLayout("gatedResidualBackward", y, gate)
        precondition(biasGradient.map { $0.dtype == .f32 && $0.count == width } ?? true,
                     "gatedResidualBackward on CUDA: the bias gradient must be f32 [\(width)]")
        let dGate = empty(gate.shape, dtype: element)
        // Σ_tokens dY = gate ⊙ Σ_tokens dOut per sample: the pass sums dOut per sample, a small launch weighs the
        // samples' sums by their gates into the bias gradient (instead of a column-sum pass over dY).
        let sampleSums = biasGradient.map { _ in empty([batch, width], dtype: .f32) }
        let dY = perSampleScaleBackward(dOut, y, gate, add: 0, first: sampleSums, second: dGate, batch: batch,
                                        tokens: tokens, width: width)
        if let biasGradient, let sampleSums {
            launch("scaled_sample_sums", in: "NN", element: element, grid: ((width + 31) / 32, 1, 1), block: (32, 8, 1),
                   [gate, sampleSums, biasGradient, Int32(batch), Int32(width)])
        }
        return (dGate, dY)
    }

    /// dy ⊙ (add + g[sample]) for dy [B, N, D] and g [B, D], and in the same pass first = Σ_tokens dy and
    /// second = Σ_tokens dy ⊙ c per sample (either may be nil). NN.cu's kernel spreads a row over a block, a thread
    /// per pack of 8 columns, and the GPU gets one full wave of blocks: each sample's rows split evenly into its
    /// share of runs, at most 128 (the sample's last block adds their partial rows one after the other).
    private func perSampleScaleBackward(_ dy: Tensor, _ c: Tensor, _ g: Tensor, add: Float, first: Tensor?,
                                        second: Tensor?, batch: Int, tokens: Int, width: Int) -> Tensor {
        let out = empty(dy.shape, dtype: dy.dtype)
        guard batch * tokens > 0 && width > 0 else {
            for case let sums? in [first, second] { fill(sums, with: 0) }
            return out
        }
        let threads = ((width + 7) / 8 + 31) / 32 * 32
        precondition(threads <= Self.packKernelThreads, "per-sample scaling's backward on CUDA: rows of \(width) "
                     + "columns; its kernel holds at most \(8 * Self.packKernelThreads) (NN.cu's PACK_THREADS)")
        let name = "per_sample_scale_backward"
        let chunks = Swift.max(1, Swift.min(tokens, 128, residentBlocks(name, element: dy.dtype, threads: threads) / batch))
        launch(name, in: "NN", element: dy.dtype, grid: (batch * chunks, 1, 1), block: (threads, 1, 1),
               [dy, c, g, add, out]
                   + runSumArguments(first: first, second: second, segments: batch, chunks: chunks, width: width,
                                     accumulate: false)
                   + [Int64(tokens), Int32(width), Int32(chunks), packs(width: width, dy, c, g, out)])
        return out
    }

    /// The most threads a block of NN.cu's per-sample scaling backward has (PACK_THREADS).
    private static let packKernelThreads = 512

    /// Blocks of `threads` of NN.cu's kernel `name` the whole GPU holds at once (the driver's occupancy for it).
    private func residentBlocks(_ name: String, element: DType, threads: Int) -> Int {
        let key = ResidencyKey(name: name, element: element, threads: threads)
        if let blocks = residency[key] { return blocks }
        var perMultiprocessor: Int32 = 0
        do {
            let function = try kernel(name, in: "NN", element: element)
            try driver.check(driver.cuOccupancyMaxActiveBlocksPerMultiprocessor(&perMultiprocessor, function,
                                                                                  Int32(threads), 0),
                             "cuOccupancyMaxActiveBlocksPerMultiprocessor(\(name))")
        } catch {
            fatalError("\(error)")
        }
        let blocks = Swift.max(1, Int(perMultiprocessor)) * multiprocessors
        residency[key] = blocks
        return blocks
    }

    // MARK: Token runs and column sums

    /// Rows one block of a token-run kernel walks at most: [64, 256, D] makes 256 blocks (enough for an H100's 132
    /// SMs), whose partial rows (1/64 of the data per sum) the segment's last block adds up.
    private static let runRows = 64
    /// The most shared memory one block may have on sm_90 (227 KiB, with the opt-in).
    private static let maxSharedBytes = 227 << 10

    /// Launches a token-run kernel (NN.cu) over data [segments, tokens, width]: `arguments`, then the partial rows
    /// and outputs of its two column sums and the run layout, then `then`. The sums per segment land in `first` and
    /// `second` ([segments, width], either nil, each f32 or the element type), written or, when `accumulate`, added to.
    /// Each warp keeps its own f32 slice of each sum in shared memory: at most 8 warps, as many as fit.
    private func launchTokenRuns(_ name: String, element: DType, segments: Int, tokens: Int, width: Int,
                                 first: Tensor?, second: Tensor?, accumulate: Bool, _ arguments: [any KernelArgument],
                                 then trailing: [any KernelArgument]) {
        guard segments * tokens > 0 && width > 0 else {
            // No rows: the sums are empty, so zero (or, accumulated, unchanged).
            if !accumulate { for case let out? in [first, second] { fill(out, with: 0) } }
            return
        }
        let outputs = [first, second].compactMap { $0 }
        let chunks = (tokens + Self.runRows - 1) / Self.runRows, chunkRows = (tokens + chunks - 1) / chunks
        let bytes = outputs.count * 4 * ((width + 7) / 8 * 8)
        precondition(bytes <= Self.maxSharedBytes, "\(name) on CUDA: rows of \(width) columns are too wide for the "
                     + "column sums in shared memory (at most \(Self.maxSharedBytes / (4 * Swift.max(outputs.count, 1))))")
        let warps = Swift.max(1, Swift.min(8, chunkRows, Self.maxSharedBytes / Swift.max(bytes, 1)))
        launch(rowKernel(name, width: width), in: "NN", element: element, grid: (segments * chunks, 1, 1), block: (warps * 32, 1, 1),
               sharedMemoryBytes: warps * bytes,
               arguments
                   + runSumArguments(first: first, second: second, segments: segments, chunks: chunks, width: width,
                                     accumulate: accumulate)
                   + [Int64(tokens), Int32(width), Int32(chunkRows), Int32(chunks)] + trailing)
    }

    /// A token-run kernel's column-sum arguments (NN.cu's run_sums): the blocks' partial rows (f32 [segments ·
    /// chunks, width] for each sum taken), the outputs, a counter per segment, which outputs are f32, and whether
    /// they are added to.
    private func runSumArguments(first: Tensor?, second: Tensor?, segments: Int, chunks: Int, width: Int,
                                 accumulate: Bool) -> [any KernelArgument] {
        let partial = { (output: Tensor?) in output.map { _ in self.empty([segments * chunks, width], dtype: .f32) } }
        return [argument(partial(first)), argument(partial(second)), argument(first), argument(second),
                reductionCounters(segments), Int32((first?.dtype == .f32 ? 1 : 0) | (second?.dtype == .f32 ? 2 : 0)),
                Int32(accumulate ? 1 : 0)]
    }

    /// Columns a block of column_sums takes (NN.cu: 16 lanes × a pack of 8).
    private static let sumStrip = 128

    /// Bias gradients: accumulator[j] += Σ_rows a[row, j] for a [rows, width], in one launch. Rows go in chunks of
    /// 256 so the long reduction over every token of the batch still spreads over the whole GPU; each strip of 128
    /// columns' last block adds its chunks up in order.
    func columnSums(_ a: Tensor, into accumulator: Tensor, rows: Int, width: Int) {
        guard width > 0 else { return }
        let chunkRows = Swift.max(256, (rows + 65_534) / 65_535), chunks = Swift.max(1, (rows + chunkRows - 1) / chunkRows)
        let strips = (width + Self.sumStrip - 1) / Self.sumStrip
        let vectors = width % 8 == 0 && Int(bitPattern: a.address) % 16 == 0
        launch("column_sums", in: "NN", element: a.dtype, grid: (strips, chunks, 1), block: (16, 16, 1),
               [a, empty([chunks, width], dtype: .f32), reductionCounters(strips), accumulator, Int64(rows), Int32(width),
                Int32(chunkRows), Int32(vectors ? 1 : 0)])
    }

    // MARK: Activations

    private func pointwise(_ name: String, _ op: String, _ inputs: Tensor...) -> Tensor {
        let element = requireElement(op, inputs.first)
        for t in inputs { requireElement(op, inputs[0], t); sameShape(op, inputs[0], t) }
        let out = empty(inputs[0].shape, dtype: element)
        if out.count > 0 {
            launch(name, in: "NN", element: element, count: out.count,
                   inputs.map { $0 as any KernelArgument } + [out, Int64(out.count)])
        }
        return out
    }

    /// Elements a group_norm_partials block sums at least: 8 packs of 8 a thread, so its block reduction (two f64
    /// trees) is paid over enough loads (4096: [1, 128, 512, 512] bf16 0.288 ms; 16 384: BENCHMARKS.md).
    private static let groupNormChunk = 16_384

    /// `Kernels/NN.cu`'s group_norm_partials (rows cut into chunks of ≥ groupNormChunk elements, up to 1024 a row),
    /// group_norm_statistics and group_norm_apply, by packs of 8 where the planes allow.
    public func groupNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, groups: Int, eps: Double) -> Tensor {
        let element = requireElement("groupNorm", x, weight, bias)
        let (batch, channels) = (x.shape[0], x.shape[1]), plane = x.count / Swift.max(batch * channels, 1)
        precondition(x.rank >= 2 && groups > 0 && channels % groups == 0, "groupNorm: \(channels) channels of \(x.shape) "
                     + "in \(groups) groups")
        precondition([weight, bias].allSatisfy { $0.map { $0.shape == [channels] } ?? true },
                     "groupNorm: weight and bias must be [\(channels)]")
        let y = empty(x.shape, dtype: element), rows = batch * groups, length = channels / groups * plane
        guard rows > 0 && plane > 0 else { return y }
        let chunks = Swift.max(1, Swift.min(1024, length / Self.groupNormChunk))
        let partials = empty([rows * chunks, 2], dtype: .f64), statistics = empty([rows, 2], dtype: .f32)
        // Packs of 8 (16-byte bf16 loads) when no pack straddles a plane and both tensors are aligned for them.
        let vectors = plane % 8 == 0 && [x, y].allSatisfy { Int(bitPattern: $0.address) % 16 == 0 }
        launch("group_norm_partials", in: "NN", element: element, count: rows * chunks, blocks: rows * chunks,
               threads: 256, [x, partials, Int64(length), Int32(chunks), Int32(vectors ? 1 : 0)])
        launch("group_norm_statistics", in: "NN", count: rows, [partials, statistics, Int64(length), Int32(chunks), eps,
                                                                Int64(rows)])
        launch("group_norm_apply", in: "NN", element: element, count: vectors ? x.count / 8 : x.count,
               [x, argument(weight), argument(bias), statistics, y, Int32(groups), Int32(channels / groups),
                Int64(plane), Int64(x.count), Int32(vectors ? 1 : 0)])
        return y
    }

    public func gelu(_ x: Tensor) -> Tensor { pointwise("gelu", "gelu", x) }
    public func geluBackward(_ dy: Tensor, x: Tensor) -> Tensor { pointwise("gelu_backward", "geluBackward", dy, x) }
    public func silu(_ x: Tensor) -> Tensor { pointwise("silu", "silu", x) }
    public func siluBackward(_ dy: Tensor, x: Tensor) -> Tensor { pointwise("silu_backward", "siluBackward", dy, x) }

    // MARK: Embeddings

    public func embedding(_ table: Tensor, indices: Tensor) -> Tensor {
        let element = requireElement("embedding", table)
        let width = checkedEmbedding("embedding", table, indices)
        let out = empty(indices.shape + [width], dtype: element)
        if out.count > 0 {
            launch("embedding", in: "NN", element: element, count: out.count,
                   [table, indices, out, Int32(width), Int64(out.count), Int32(table.shape[0]), indexErrors()])
        }
        return out
    }

    public func embeddingBackward(_ dOut: Tensor, indices: Tensor, into dTable: Tensor) {
        let element = requireElement("embeddingBackward", dOut)
        requireF32("embeddingBackward", dTable)
        let width = checkedEmbedding("embeddingBackward", dTable, indices)
        precondition(dOut.shape == indices.shape + [width],
                     "embeddingBackward: dOut \(dOut.shape) does not fit indices \(indices.shape) and table \(dTable.shape)")
        guard width > 0 && indices.count > 0 else { return }
        launch("embedding_backward", in: "NN", element: element, count: width, threads: 128,
               [dOut, indices, dTable, Int32(width), Int64(indices.count), Int32(dTable.shape[0]), indexErrors()])
    }

    /// Checks the table is [V, D] and the indices i32; returns D. The indices' range is checked by the kernels (an
    /// index outside the table is reported at the next host read, `takeIndexError`): reading them here would stall
    /// every step until the GPU drained.
    private func checkedEmbedding(_ op: String, _ table: Tensor, _ indices: Tensor) -> Int {
        precondition(table.rank == 2, "\(op): the table must be [V, D], got \(table.shape)")
        precondition(indices.dtype == .i32, "\(op): indices must be i32, got \(indices.dtype)")
        return table.shape[1]
    }

    /// t is f32 [B] (a bf16 t could not tell 999 from 1000); so are the features (a model casts them).
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
            launch("timestep_embedding", in: "NN", count: out.count,
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
