import CBLAS
import KinemaTensor
import RealModule

/// Scaled dot-product attention with the flash-attention contract: the forward keeps only the output and the
/// per-row log-sum-exp, the backward rebuilds the probabilities from them.
///
/// Work is split over (batch, head) pairs: each pair reads and writes its own slices, so the split never changes
/// a result. The products go through OpenBLAS, which is thread-safe (0.3.7+) when called from several threads.
/// The log-sum-exp is stored in the compute dtype (f32, or f64 for f64 inputs).
extension CPUBackend {
    public func attention(q: Tensor, k: Tensor, v: Tensor, keyMask: Tensor?,
                          scale: Double) -> (out: Tensor, logSumExp: Tensor) {
        attentionForward("attention", q: q, k: k, v: v, bias: nil, keyMask: keyMask, causal: false, scale: scale)
    }

    public func biasedAttention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor?, keyMask: Tensor?, causal: Bool,
                                scale: Double) -> Tensor {
        attentionForward("biasedAttention", q: q, k: k, v: v, bias: bias, keyMask: keyMask, causal: causal,
                         scale: scale).out
    }

    private func attentionForward(_ op: String, q: Tensor, k: Tensor, v: Tensor, bias: Tensor?, keyMask: Tensor?,
                                  causal: Bool, scale: Double) -> (out: Tensor, logSumExp: Tensor) {
        let shape = AttentionShape(op, q: q, k: k, v: v, keyMask: keyMask)
        let (nq, nk, dh) = (shape.queries, shape.keys, shape.headDim)
        if let bias {
            precondition(bias.shape == [shape.heads, nq, nk] && bias.dtype == q.dtype,
                         "\(op): bias must be \(q.dtype) [H, Nq, Nk] = \([shape.heads, nq, nk]), got \(bias.dtype) \(bias.shape)")
        }
        let attended = attendedKeys(keyMask, shape)
        func run<T: CPUScalar>(_: T.Type) -> (Tensor, Tensor) {
            let out = empty(q.shape, dtype: q.dtype)
            let lse = empty(Array(q.shape.dropLast()), dtype: q.dtype)
            let qs = q.elements(T.self), ks = k.elements(T.self), vs = v.elements(T.self)
            let os = out.elements(T.self), ls = lse.elements(T.self)
            let bs = bias?.elements(T.self)
            parallelFor(shape.pairs, grain: 1) { range in
                let p = UnsafeMutablePointer<T>.allocate(capacity: nq * nk)
                defer { p.deallocate() }
                for pair in range {
                    let qOffset = pair * nq * dh, kOffset = pair * nk * dh
                    let batchAttended = attended(pair / shape.heads)
                    // S = scale · q kᵀ (+ bias), then P = softmax(S) over the attended keys row by row, shifted by
                    // the row max for stability; masked keys (and, when causal, keys after the query) get 0.
                    if let bs {
                        p.update(from: bs + (pair % shape.heads) * nq * nk, count: nq * nk)
                    }
                    gemm(false, true, m: nq, n: nk, k: dh, alpha: T(scale), qs + qOffset, lda: dh, ks + kOffset, ldb: dh,
                         beta: bs == nil ? 0 : 1, p, ldc: nk)
                    for i in 0..<nq {
                        let row = p + i * nk
                        let keyAttended = { (j: Int) in batchAttended(j) && (!causal || j <= i) }
                        var maximum = -T.infinity
                        for j in 0..<nk where keyAttended(j) { maximum = Swift.max(maximum, row[j]) }
                        guard maximum > -T.infinity else {
                            // No attended key: zero output (P = 0) and lse = −∞, as the protocol documents.
                            for j in 0..<nk { row[j] = 0 }
                            ls[pair * nq + i] = -T.infinity
                            continue
                        }
                        var total: T = 0
                        for j in 0..<nk {
                            let e = keyAttended(j) ? T.exp(row[j] - maximum) : 0
                            row[j] = e
                            total += e
                        }
                        let inverse = 1 / total
                        for j in 0..<nk { row[j] *= inverse }
                        ls[pair * nq + i] = maximum + T.log(total)
                    }
                    gemm(false, false, m: nq, n: dh, k: nk, alpha: 1, p, lda: nk, vs + kOffset, ldb: dh,
                         beta: 0, os + qOffset, ldc: dh)
                }
            }
            return (out, lse)
        }
        return floatSwitch(q.dtype, op, f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    public func attentionBackward(_ dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, logSumExp: Tensor,
                                  keyMask: Tensor?, scale: Double) -> (dq: Tensor, dk: Tensor, dv: Tensor) {
        let shape = AttentionShape("attentionBackward", q: q, k: k, v: v, keyMask: keyMask)
        let (nq, nk, dh) = (shape.queries, shape.keys, shape.headDim)
        requireSameShape("attentionBackward", q, dOut, out)
        precondition(logSumExp.shape == Array(q.shape.dropLast()) && logSumExp.dtype == q.dtype,
                     "attentionBackward: logSumExp \(logSumExp.shape) \(logSumExp.dtype) does not fit q \(q.shape) \(q.dtype)")
        let attended = attendedKeys(keyMask, shape)
        func run<T: CPUScalar>(_: T.Type) -> (Tensor, Tensor, Tensor) {
            let dq = empty(q.shape, dtype: q.dtype), dk = empty(k.shape, dtype: k.dtype), dv = empty(v.shape, dtype: v.dtype)
            let qs = q.elements(T.self), ks = k.elements(T.self), vs = v.elements(T.self)
            let gs = dOut.elements(T.self), os = out.elements(T.self), ls = logSumExp.elements(T.self)
            let dqs = dq.elements(T.self), dks = dk.elements(T.self), dvs = dv.elements(T.self)
            parallelFor(shape.pairs, grain: 1) { range in
                let p = UnsafeMutablePointer<T>.allocate(capacity: nq * nk)
                let dp = UnsafeMutablePointer<T>.allocate(capacity: nq * nk)
                defer { p.deallocate(); dp.deallocate() }
                for pair in range {
                    let qOffset = pair * nq * dh, kOffset = pair * nk * dh
                    let keyAttended = attended(pair / shape.heads)
                    // P = exp(scale · q kᵀ − lse), exactly the forward's probabilities (0 for masked keys and for
                    // rows with no attended key, whose lse is −∞, so every gradient through them is 0).
                    gemm(false, true, m: nq, n: nk, k: dh, alpha: T(scale), qs + qOffset, lda: dh, ks + kOffset, ldb: dh,
                         beta: 0, p, ldc: nk)
                    for i in 0..<nq {
                        let row = p + i * nk, l = ls[pair * nq + i]
                        for j in 0..<nk { row[j] = keyAttended(j) && l > -T.infinity ? T.exp(row[j] - l) : 0 }
                    }
                    // dV = Pᵀ dO; dP = dO vᵀ.
                    gemm(true, false, m: nk, n: dh, k: nq, alpha: 1, p, lda: nk, gs + qOffset, ldb: dh,
                         beta: 0, dvs + kOffset, ldc: dh)
                    gemm(false, true, m: nq, n: nk, k: dh, alpha: 1, gs + qOffset, lda: dh, vs + kOffset, ldb: dh,
                         beta: 0, dp, ldc: nk)
                    // dS = P ⊙ (dP − δ), δ_i = Σ_j P_ij dP_ij = Σ_d dO_id O_id (cheaper: Dh terms instead of Nk).
                    for i in 0..<nq {
                        var delta: T = 0
                        for d in 0..<dh { delta += gs[qOffset + i * dh + d] * os[qOffset + i * dh + d] }
                        let pr = p + i * nk, dpr = dp + i * nk
                        for j in 0..<nk { dpr[j] = pr[j] * (dpr[j] - delta) }
                    }
                    // dQ = scale · dS k; dK = scale · dSᵀ q.
                    gemm(false, false, m: nq, n: dh, k: nk, alpha: T(scale), dp, lda: nk, ks + kOffset, ldb: dh,
                         beta: 0, dqs + qOffset, ldc: dh)
                    gemm(true, false, m: nk, n: dh, k: nq, alpha: T(scale), dp, lda: nk, qs + qOffset, ldb: dh,
                         beta: 0, dks + kOffset, ldc: dh)
                }
            }
            return (dq, dk, dv)
        }
        let (dq, dk, dv) = floatSwitch(q.dtype, "attentionBackward", f32: { run(Float.self) }, f64: { run(Double.self) })
        return (dq, dk, dv)
    }

    /// For a batch row, whether key j is attended to (always, without a mask).
    private func attendedKeys(_ keyMask: Tensor?, _ shape: AttentionShape) -> @Sendable (Int) -> @Sendable (Int) -> Bool {
        guard let keyMask else { return { _ in { _ in true } } }
        let flags = Array(UnsafeBufferPointer(start: keyMask.elements(Int32.self), count: keyMask.count))
        let keys = shape.keys
        return { batch in { j in flags[batch * keys + j] != 0 } }
    }
}

/// Row-major C = alpha · op(A) · op(B) + beta · C on raw pointers, for the f32 or f64 instantiation of a kernel.
@inline(__always)
func gemm<T: CPUScalar>(_ transposeA: Bool, _ transposeB: Bool, m: Int, n: Int, k: Int, alpha: T,
                        _ a: UnsafePointer<T>, lda: Int, _ b: UnsafePointer<T>, ldb: Int,
                        beta: T, _ c: UnsafeMutablePointer<T>, ldc: Int) {
    guard m > 0 && n > 0 else { return }
    let rowMajor: Int32 = 101, noTrans: Int32 = 111, trans: Int32 = 112
    let ta = transposeA ? trans : noTrans, tb = transposeB ? trans : noTrans
    if T.self == Float.self {
        cblas_sgemm(rowMajor, ta, tb, Int32(m), Int32(n), Int32(k), Float(alpha),
                    UnsafeRawPointer(a).assumingMemoryBound(to: Float.self), Int32(lda),
                    UnsafeRawPointer(b).assumingMemoryBound(to: Float.self), Int32(ldb), Float(beta),
                    UnsafeMutableRawPointer(c).assumingMemoryBound(to: Float.self), Int32(ldc))
    } else if T.self == Double.self {
        cblas_dgemm(rowMajor, ta, tb, Int32(m), Int32(n), Int32(k), Double(alpha),
                    UnsafeRawPointer(a).assumingMemoryBound(to: Double.self), Int32(lda),
                    UnsafeRawPointer(b).assumingMemoryBound(to: Double.self), Int32(ldb), Double(beta),
                    UnsafeMutableRawPointer(c).assumingMemoryBound(to: Double.self), Int32(ldc))
    } else {
        preconditionFailure("gemm: unsupported scalar \(T.self)")
    }
}
