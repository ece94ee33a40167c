import Foundation
import KinemaTensor

/// Element strides of an attention operand indexed [B, H, N, Dh] with a contiguous head dim: contiguous
/// [B, H, N, Dh] is (H·N·Dh, N·Dh, Dh); token-major [B, N, H, Dh] is (N·H·Dh, Dh, H·Dh); one third of a packed
/// qkv [B, N, 3, H, Dh] is (N·3·H·Dh, Dh, 3·H·Dh). Passed to the kernels by value (the `Strides` struct of
/// FlashAttention.cu: three 64-bit integers).
struct AttentionStrides: KernelArgument, Equatable {
    var batch: Int64, head: Int64, row: Int64

    /// The strides of a contiguous [B, H, N, Dh] tensor.
    init(contiguous shape: [Int]) {
        (batch, head, row) = (Int64(shape[1] * shape[2] * shape[3]), Int64(shape[2] * shape[3]), Int64(shape[3]))
    }

    init(batch: Int, head: Int, row: Int) { (self.batch, self.head, self.row) = (Int64(batch), Int64(head), Int64(row)) }

    /// Whether 16-byte loads are safe: every row of `tensor` starts 16-byte aligned.
    func allowsVectors(_ tensor: Tensor) -> Bool {
        [batch, head, row].allSatisfy { $0 % 8 == 0 } && Int(bitPattern: tensor.address) % 16 == 0
    }
}

/// Attention on the GPU. f32: the exact simple kernels of `Kernels/Attention.cu` (one block per query or key row),
/// matching the CPU backend to f32 rounding. bf16: flash attention (`Kernels/FlashAttention.cu`) on the tensor cores
/// with f32 accumulation and an f32 log-sum-exp, head dims up to 128, any Nq and Nk.
extension CUDABackend {
    /// The flash kernels' padded head dims (multiples of 16, the mma's k); Dh runs as the smallest one ≥ Dh.
    private static let flashHeadDims = [64, 80, 96, 128]
    private static let flashThreads = 128

    public func attention(q: Tensor, k: Tensor, v: Tensor, keyMask: Tensor?,
                          scale: Double) -> (out: Tensor, logSumExp: Tensor) {
        let shape = AttentionShape("attention", q: q, k: k, v: v, keyMask: keyMask)
        let out = empty(q.shape, dtype: q.dtype), lse = empty(Array(q.shape.dropLast()), dtype: .f32)
        switch q.dtype {
        case .bf16:
            let strides = AttentionStrides(contiguous: q.shape), keyStrides = AttentionStrides(contiguous: k.shape)
            flashAttention(shape, q: q, strides, k: k, keyStrides, v: v, keyStrides, keyMask: keyMask, scale: scale,
                           out: out, strides, logSumExp: lse)
        case .f32:
            exactAttention(shape, q: q, k: k, v: v, bias: nil, keyMask: keyMask, causal: false, scale: scale, out: out,
                           logSumExp: lse)
        default:
            unsupported("attention", q.dtype)
        }
        return (out, lse)
    }

    /// The exact f32 kernel for every dtype it serves: a frozen text encoder runs once per caption, so bf16 inputs
    /// are widened rather than given a flash kernel with a bias operand.
    public func biasedAttention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor?, keyMask: Tensor?, causal: Bool,
                                scale: Double) -> Tensor {
        let shape = AttentionShape("biasedAttention", q: q, k: k, v: v, keyMask: keyMask)
        if let bias {
            precondition(bias.shape == [shape.heads, shape.queries, shape.keys] && bias.dtype == q.dtype,
                         "biasedAttention: bias must be \(q.dtype) [H, Nq, Nk] = \([shape.heads, shape.queries, shape.keys]), "
                         + "got \(bias.dtype) \(bias.shape)")
        }
        guard q.dtype == .f32 || q.dtype == .bf16 else { unsupported("biasedAttention", q.dtype) }
        let wide = { (x: Tensor) in x.dtype == .f32 ? x : self.cast(x, to: .f32) }
        let out = empty(q.shape, dtype: .f32), lse = empty(Array(q.shape.dropLast()), dtype: .f32)
        exactAttention(shape, q: wide(q), k: wide(k), v: wide(v), bias: bias.map(wide), keyMask: keyMask, causal: causal,
                       scale: scale, out: out, logSumExp: lse)
        return q.dtype == .f32 ? out : cast(out, to: q.dtype)
    }

    private func exactAttention(_ shape: AttentionShape, q: Tensor, k: Tensor, v: Tensor, bias: Tensor?, keyMask: Tensor?,
                                causal: Bool, scale: Double, out: Tensor, logSumExp: Tensor) {
        let rows = shape.pairs * shape.queries
        guard rows > 0 else { return }
        launch("attention_forward_f32", in: "Attention", count: rows, blocks: rowBlocks(rows), threads: 128,
               [q, k, v, argument(keyMask), argument(bias), Int32(causal ? 1 : 0), out, logSumExp,
                Int32(shape.queries), Int32(shape.keys), Int32(shape.headDim), Int32(shape.heads), Float(scale),
                Int64(rows)])
    }

    public func attentionBackward(_ dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, logSumExp: Tensor,
                                  keyMask: Tensor?, scale: Double) -> (dq: Tensor, dk: Tensor, dv: Tensor) {
        let shape = AttentionShape("attentionBackward", q: q, k: k, v: v, keyMask: keyMask)
        precondition(dOut.shape == q.shape && out.shape == q.shape && dOut.dtype == q.dtype && out.dtype == q.dtype,
                     "attentionBackward: dOut \(dOut.shape) \(dOut.dtype) and out \(out.shape) \(out.dtype) must be "
                     + "q's \(q.shape) \(q.dtype)")
        precondition(logSumExp.shape == Array(q.shape.dropLast()) && logSumExp.dtype == .f32,
                     "attentionBackward: logSumExp \(logSumExp.shape) \(logSumExp.dtype) is not f32 \(q.shape.dropLast())")
        let dq = empty(q.shape, dtype: q.dtype), dk = empty(k.shape, dtype: k.dtype), dv = empty(v.shape, dtype: v.dtype)
        guard shape.pairs * shape.queries > 0 else {
            // No query: nothing flows back to the keys.
            if dk.count > 0 { fill(dk, with: 0); fill(dv, with: 0) }
            return (dq, dk, dv)
        }
        switch q.dtype {
        case .bf16:
            let strides = AttentionStrides(contiguous: q.shape), keyStrides = AttentionStrides(contiguous: k.shape)
            flashAttentionBackward(shape, dOut: dOut, strides, q: q, strides, k: k, keyStrides, v: v, keyStrides,
                                   out: out, strides, logSumExp: logSumExp, keyMask: keyMask, scale: scale,
                                   dq: dq, strides, dk: dk, keyStrides, dv: dv, keyStrides)
        case .f32:
            let (pairs, nq, nk, dh) = (shape.pairs, shape.queries, shape.keys, shape.headDim)
            let queryRows = pairs * nq, keyRows = pairs * nk
            let sizes: [any KernelArgument] = [Int32(nq), Int32(nk), Int32(dh), Int32(shape.heads), Float(scale)]
            let delta = empty([queryRows], dtype: .f32)
            launch("attention_delta_f32", in: "Attention", count: queryRows, blocks: rowBlocks(queryRows),
                   threads: rowThreads(dh), [dOut, out, delta, Int32(dh), Int64(queryRows)])
            launch("attention_backward_dq_f32", in: "Attention", count: queryRows, blocks: rowBlocks(queryRows),
                   threads: 128, [q, k, v, dOut, logSumExp, delta, argument(keyMask), dq] + sizes + [Int64(queryRows)])
            launch("attention_backward_dkv_f32", in: "Attention", count: keyRows, blocks: rowBlocks(keyRows),
                   threads: 128, [q, k, v, dOut, logSumExp, delta, argument(keyMask), dk, dv] + sizes + [Int64(keyRows)])
        default:
            unsupported("attentionBackward", q.dtype)
        }
        return (dq, dk, dv)
    }

    /// bf16: flash attention reading q, k and v straight out of the packed qkv and writing the merged heads, by
    /// strides (no permutes); f32: the exact kernels through permutes.
    public func packedSelfAttention(_ qkv: Tensor, heads: Int, keyMask: Tensor?,
                                    scale: Double) -> (out: Tensor, logSumExp: Tensor) {
        guard qkv.dtype == .bf16 else { return packedSelfAttentionByPermutes(qkv, heads: heads, keyMask: keyMask, scale: scale) }
        let (shape, packed, merged, inputs) = packedLayout("packedSelfAttention", qkv, heads: heads, keyMask: keyMask)
        let out = empty([qkv.shape[0], qkv.shape[1], qkv.shape[2] / 3], dtype: .bf16)
        let lse = empty([shape.batch, heads, shape.queries], dtype: .f32)
        flashAttention(shape, q: inputs[0], packed, k: inputs[1], packed, v: inputs[2], packed, keyMask: keyMask,
                       scale: scale, out: out, merged, logSumExp: lse)
        return (out, lse)
    }

    public func packedSelfAttentionBackward(_ dOut: Tensor, qkv: Tensor, out: Tensor, logSumExp: Tensor, heads: Int,
                                            keyMask: Tensor?, scale: Double) -> Tensor {
        guard qkv.dtype == .bf16 else {
            return packedSelfAttentionBackwardByPermutes(dOut, qkv: qkv, out: out, logSumExp: logSumExp, heads: heads,
                                                         keyMask: keyMask, scale: scale)
        }
        let (shape, packed, merged, inputs) = packedLayout("packedSelfAttentionBackward", qkv, heads: heads, keyMask: keyMask)
        precondition(dOut.shape == out.shape && out.count * 3 == qkv.count && dOut.dtype == .bf16 && out.dtype == .bf16,
                     "packedSelfAttentionBackward: dOut \(dOut.shape) and out \(out.shape) must be bf16 [B, N, D]")
        let dQKV = empty(qkv.shape, dtype: .bf16)
        let gradients = parts(of: dQKV, count: 3)
        flashAttentionBackward(shape, dOut: dOut, merged, q: inputs[0], packed, k: inputs[1], packed, v: inputs[2], packed,
                               out: out, merged, logSumExp: logSumExp, keyMask: keyMask, scale: scale,
                               dq: gradients[0], packed, dk: gradients[1], packed, dv: gradients[2], packed)
        return dQKV
    }

    /// bf16: flash attention reading the heads of q [B, N, D] and of the packed kv [B, L, 2D] by strides and
    /// writing the merged heads (no permutes); f32: the exact kernels through permutes.
    public func packedCrossAttention(_ q: Tensor, kv: Tensor, heads: Int, keyMask: Tensor?,
                                     scale: Double) -> (out: Tensor, logSumExp: Tensor) {
        guard q.dtype == .bf16 else { return packedCrossAttentionByPermutes(q, kv: kv, heads: heads, keyMask: keyMask, scale: scale) }
        let layout = crossLayout("packedCrossAttention", q, kv: kv, heads: heads, keyMask: keyMask)
        let out = empty(q.shape, dtype: .bf16)
        let lse = empty([layout.shape.batch, heads, layout.shape.queries], dtype: .f32)
        let halves = parts(of: kv, count: 2)
        flashAttention(layout.shape, q: q, layout.merged, k: halves[0], layout.packed, v: halves[1], layout.packed,
                       keyMask: keyMask, scale: scale, out: out, layout.merged, logSumExp: lse)
        return (out, lse)
    }

    public func packedCrossAttentionBackward(_ dOut: Tensor, q: Tensor, kv: Tensor, out: Tensor, logSumExp: Tensor,
                                             heads: Int, keyMask: Tensor?, scale: Double) -> (dq: Tensor, dkv: Tensor) {
        guard q.dtype == .bf16 else {
            return packedCrossAttentionBackwardByPermutes(dOut, q: q, kv: kv, out: out, logSumExp: logSumExp,
                                                          heads: heads, keyMask: keyMask, scale: scale)
        }
        let layout = crossLayout("packedCrossAttentionBackward", q, kv: kv, heads: heads, keyMask: keyMask)
        precondition(dOut.shape == q.shape && out.shape == q.shape && dOut.dtype == .bf16 && out.dtype == .bf16,
                     "packedCrossAttentionBackward: dOut \(dOut.shape) and out \(out.shape) must be bf16 \(q.shape)")
        let dq = empty(q.shape, dtype: .bf16), dkv = empty(kv.shape, dtype: .bf16)
        let halves = parts(of: kv, count: 2), dHalves = parts(of: dkv, count: 2)
        flashAttentionBackward(layout.shape, dOut: dOut, layout.merged, q: q, layout.merged, k: halves[0],
                               layout.packed, v: halves[1], layout.packed, out: out, layout.merged,
                               logSumExp: logSumExp, keyMask: keyMask, scale: scale, dq: dq, layout.merged,
                               dk: dHalves[0], layout.packed, dv: dHalves[1], layout.packed)
        return (dq, dkv)
    }

    /// The attention shape of q [B, N, H·Dh] against a packed kv [B, L, 2·H·Dh], the strides of q (and of the
    /// merged output) and of kv's halves.
    private func crossLayout(_ op: String, _ q: Tensor, kv: Tensor, heads: Int, keyMask: Tensor?)
        -> (shape: AttentionShape, merged: AttentionStrides, packed: AttentionStrides) {
        precondition(q.rank == 3 && kv.rank == 3 && q.shape[0] == kv.shape[0] && kv.shape[2] == 2 * q.shape[2]
                     && heads > 0 && q.shape[2] % heads == 0 && kv.dtype == q.dtype,
                     "\(op): q must be [B, N, H·Dh] and kv [B, L, 2·H·Dh] of one dtype with H = \(heads), "
                     + "got \(q.shape) \(q.dtype) and \(kv.shape) \(kv.dtype)")
        let (batch, queries, keys, width) = (q.shape[0], q.shape[1], kv.shape[1], q.shape[2])
        if let keyMask {
            precondition(keyMask.dtype == .i32 && keyMask.shape == [batch, keys],
                         "\(op): keyMask must be i32 [B, L] = [\(batch), \(keys)], got \(keyMask.dtype) \(keyMask.shape)")
        }
        let shape = AttentionShape(op, batch: batch, heads: heads, queries: queries, keys: keys, headDim: width / heads)
        return (shape, AttentionStrides(batch: queries * width, head: width / heads, row: width),
                AttentionStrides(batch: keys * 2 * width, head: width / heads, row: 2 * width))
    }

    /// The attention shape of a packed qkv [B, N, 3·H·Dh], the strides of its thirds and of the merged
    /// [B, N, H·Dh], and views starting at q, k and v.
    private func packedLayout(_ op: String, _ qkv: Tensor, heads: Int, keyMask: Tensor?)
        -> (AttentionShape, AttentionStrides, AttentionStrides, [Tensor]) {
        precondition(qkv.rank == 3 && heads > 0 && qkv.shape[2] % (3 * heads) == 0,
                     "\(op): qkv must be [B, N, 3·H·Dh] with H = \(heads), got \(qkv.shape)")
        let (batch, tokens, width) = (qkv.shape[0], qkv.shape[1], qkv.shape[2] / 3)
        let shape = AttentionShape(op, batch: batch, heads: heads, queries: tokens, keys: tokens, headDim: width / heads)
        if let keyMask {
            precondition(keyMask.dtype == .i32 && keyMask.shape == [batch, tokens],
                         "\(op): keyMask must be i32 [B, N] = [\(batch), \(tokens)], got \(keyMask.dtype) \(keyMask.shape)")
        }
        let packed = AttentionStrides(batch: tokens * 3 * width, head: width / heads, row: 3 * width)
        let merged = AttentionStrides(batch: tokens * width, head: width / heads, row: width)
        return (shape, packed, merged, parts(of: qkv, count: 3))
    }

    /// Views of a packed [B, N, count, H, Dh] tensor starting at each of its parts (q, k, v or k, v; the kernels
    /// add the strides).
    private func parts(of packed: Tensor, count: Int) -> [Tensor] {
        let width = packed.shape[2] / count
        return (0..<count).map {
            Tensor(shape: [packed.count - $0 * width], dtype: packed.dtype, buffer: packed.buffer,
                   offset: packed.offset + $0 * width)
        }
    }

    private func unsupported(_ op: String, _ dtype: DType) -> Never {
        preconditionFailure("\(op): the CUDA attention computes f32 (exact) or bf16 (flash attention), not \(dtype); "
                            + "cast q, k and v first")
    }

    // MARK: Flash attention with explicit strides

    /// Flash attention forward on bf16 operands laid out by element strides (head dim contiguous): writes `out`
    /// (bf16, indexed [B, H, Nq, Dh] by `outStrides`) and `logSumExp` (contiguous f32 [B, H, Nq]).
    func flashAttention(_ shape: AttentionShape, q: Tensor, _ qStrides: AttentionStrides, k: Tensor,
                        _ kStrides: AttentionStrides, v: Tensor, _ vStrides: AttentionStrides, keyMask: Tensor?,
                        scale: Double, out: Tensor, _ outStrides: AttentionStrides, logSumExp: Tensor) {
        let padded = flashHeadDim(shape, q, k, v, out)
        guard shape.pairs * shape.queries > 0 else { return }
        precondition(logSumExp.dtype == .f32 && logSumExp.count == shape.pairs * shape.queries,
                     "flashAttention: logSumExp must be f32 [B, H, Nq], got \(logSumExp.dtype) \(logSumExp.shape)")
        let vectors = shape.headDim % 8 == 0 && qStrides.allowsVectors(q) && kStrides.allowsVectors(k)
            && vStrides.allowsVectors(v) && outStrides.allowsVectors(out)
        // Two buffers of 64-row K and V tiles of (D + 8) bf16 (the 128-row Q tile waits in the second), two sets of
        // 64 key biases; 8 warps of 16 queries.
        let bytes = 4 * 64 * (padded + 8) * 2 + 2 * 64 * 4
        launch("flash_forward_\(padded)", in: "FlashAttention", grid: ((shape.queries + 127) / 128, shape.pairs, 1),
               block: (256, 1, 1), sharedMemoryBytes: bytes,
               [q, k, v, argument(keyMask), out, logSumExp, qStrides, kStrides, vStrides, outStrides,
                Int32(shape.queries), Int32(shape.keys), Int32(shape.headDim), Int32(shape.heads),
                Float(scale * M_LOG2E), Int32(vectors ? 1 : 0)])
    }

    /// Flash attention backward on bf16 operands laid out by element strides: dq, dk, dv (bf16) from dOut, the
    /// forward's out and logSumExp; no atomics, deterministic. When the pairs' scores fit `scoreGradientBudget`
    /// (short sequences), the short-sequence backward: a δ pass (δ = rowsum(dO ⊙ O), the lse in log2 units), the
    /// dK/dV kernel (one CTA per key tile), which also stores dSᵀ, then dQ = dS K from it. Otherwise a dQ kernel
    /// (one CTA per query tile, which also writes δ and the log2 lse), then the dK/dV kernel; each rebuilds P.
    func flashAttentionBackward(_ shape: AttentionShape, dOut: Tensor, _ dOutStrides: AttentionStrides, q: Tensor,
                                _ qStrides: AttentionStrides, k: Tensor, _ kStrides: AttentionStrides, v: Tensor,
                                _ vStrides: AttentionStrides, out: Tensor, _ outStrides: AttentionStrides,
                                logSumExp: Tensor, keyMask: Tensor?, scale: Double,
                                dq: Tensor, _ dqStrides: AttentionStrides, dk: Tensor, _ dkStrides: AttentionStrides,
                                dv: Tensor, _ dvStrides: AttentionStrides) {
        let padded = flashHeadDim(shape, q, k, v, out, dOut, dq, dk, dv)
        let rows = shape.pairs * shape.queries
        guard rows > 0 else { return }
        precondition(logSumExp.dtype == .f32 && logSumExp.count == rows,
                     "flashAttentionBackward: logSumExp must be f32 [B, H, Nq], got \(logSumExp.dtype) \(logSumExp.shape)")
        let vectors = shape.headDim % 8 == 0
            && zip([qStrides, kStrides, vStrides, outStrides, dOutStrides, dqStrides, dkStrides, dvStrides],
                   [q, k, v, out, dOut, dq, dk, dv]).allSatisfy { $0.allowsVectors($1) }
        let delta = empty([rows], dtype: .f32), lseLog2 = empty([rows], dtype: .f32)
        let sizes: [any KernelArgument] = [Int32(shape.queries), Int32(shape.keys), Int32(shape.headDim),
                                           Int32(shape.heads), Float(scale), Float(scale * M_LOG2E), Int32(vectors ? 1 : 0)]
        let tileBytes = 256 * (padded + 8) * 2  // each kernel: 256 rows of (D + 8) bf16 tiles
        // dSᵀ rows: the dK/dV kernel's 64-key tiles; columns: the dQ kernel's 128-query tiles.
        let (keysPadded, queriesPadded) = ((shape.keys + 63) / 64 * 64, (shape.queries + 127) / 128 * 128)
        let dkvArguments: [any KernelArgument] = [q, k, v, dOut, lseLog2, delta, argument(keyMask), dk, dv,
                                                  qStrides, kStrides, vStrides, dOutStrides, dkStrides, dvStrides]
        let dkvGrid = ((shape.keys + 63) / 64, shape.pairs, 1)
        // dK/dV: 64-row K and V, two buffers of 32-row Q and dO with 2 × 32 lse and δ; on the wgmma kernel where it
        // applies, tiles of D columns (unpadded rows). `scores`: where the short-sequence backward keeps dSᵀ, and its
        // row length.
        func launchKeyGradients(scores: Tensor?, columns: Int) {
            if usesHopperAttention && vectors {
                launch("flash_backward_dkv_hopper_\(padded)", in: "FlashAttention", grid: dkvGrid,
                       block: (Self.flashThreads, 1, 1), sharedMemoryBytes: 256 * padded * 2 + 4 * 32 * 4,
                       dkvArguments + sizes.dropLast() + [argument(scores), Int32(columns)])
            } else {
                let scoreArguments: [any KernelArgument] = scores.map { [$0, Int32(columns)] } ?? []
                launch("flash_backward_dkv_\(scores == nil ? "" : "scores_")\(padded)", in: "FlashAttention",
                       grid: dkvGrid, block: (Self.flashThreads, 1, 1), sharedMemoryBytes: tileBytes + 4 * 32 * 4,
                       dkvArguments + sizes + scoreArguments)
            }
        }
        // The δ pass reads O and dO as dense rows, in either order of heads and tokens.
        let tokenMajor = AttentionStrides(batch: shape.queries * shape.heads * shape.headDim,
                                          head: shape.headDim, row: shape.heads * shape.headDim)
        let headMajor = AttentionStrides(contiguous: [shape.batch, shape.heads, shape.queries, shape.headDim])
        if shape.pairs * keysPadded * queriesPadded * 2 <= scoreGradientBudget && vectors
            && outStrides == dOutStrides && [tokenMajor, headMajor].contains(outStrides) {
            // δ: 32 rows a block, a thread per 8 columns.
            launch("flash_backward_delta", in: "FlashAttention", grid: ((rows + 31) / 32, 1, 1),
                   block: (32 * shape.headDim / 8, 1, 1),
                   [out, dOut, logSumExp, delta, lseLog2, Int32(shape.queries), Int32(shape.headDim),
                    Int32(shape.heads), Int64(rows), Int32(outStrides == tokenMajor && shape.heads > 1 ? 1 : 0)])
            let scores = empty([shape.pairs * keysPadded * queriesPadded], dtype: .bf16)
            launchKeyGradients(scores: scores, columns: queriesPadded)
            // dQ from dSᵀ, 8 warps: three buffers of a 64-row K tile and a 64 × 128 dSᵀ tile.
            launch("flash_backward_dq_scores_\(padded)", in: "FlashAttention",
                   grid: (queriesPadded / 128, shape.pairs, 1), block: (256, 1, 1),
                   sharedMemoryBytes: 3 * 64 * (padded + 8 + 136) * 2,
                   [k, scores, dq, kStrides, dqStrides, Int32(shape.queries), Int32(shape.keys), Int32(shape.headDim),
                    Int32(shape.heads), Float(scale), Int32(queriesPadded), Int32(vectors ? 1 : 0)])
            return
        }
        // dQ: 64-row Q and dO, two buffers of 32-row K and V (O waits in the second), 2 × 32 key biases, 64 δ.
        launch("flash_backward_dq_\(padded)", in: "FlashAttention", grid: ((shape.queries + 63) / 64, shape.pairs, 1),
               block: (Self.flashThreads, 1, 1), sharedMemoryBytes: tileBytes + (2 * 32 + 64) * 4,
               [q, k, v, out, dOut, logSumExp, argument(keyMask), dq, delta, lseLog2,
                qStrides, kStrides, vStrides, outStrides, dOutStrides, dqStrides] + sizes)
        launchKeyGradients(scores: nil, columns: 0)
    }

    /// Checks the flash kernels' limits (bf16 operands, Dh ≤ 128, B·H within a grid's y) and returns the padded D.
    private func flashHeadDim(_ shape: AttentionShape, _ operands: Tensor...) -> Int {
        for t in operands {
            precondition(t.dtype == .bf16, "flash attention: operands must be bf16, got \(t.dtype) \(t.shape)")
        }
        precondition(shape.pairs <= 65_535, "flash attention: B·H = \(shape.pairs) exceeds the grid's 65535 pairs")
        guard let padded = Self.flashHeadDims.first(where: { $0 >= shape.headDim }) else {
            preconditionFailure("flash attention: head dim \(shape.headDim) is above 128; use f32 attention")
        }
        return padded
    }
}
