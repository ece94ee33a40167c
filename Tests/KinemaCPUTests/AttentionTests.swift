import KinemaCPU
import KinemaTensor
import KinemaTestSupport
import XCTest

/// Attention forward and backward against explicit scores and probabilities, with Nq ≠ Nk.
final class AttentionTests: XCTestCase {
    let cpu = CPUBackend(threads: 2)
    let (batch, heads, nq, nk, dh) = (2, 2, 5, 3, 4)

    func testAttentionMatchesReference() {
        for (dtype, tolerance) in [(DType.f32, 2e-5), (.f64, 1e-12)] {
            let q = randomTensor([batch, heads, nq, dh], dtype: dtype, seed: 1, backend: cpu, scale: 2)
            let k = randomTensor([batch, heads, nk, dh], dtype: dtype, seed: 2, backend: cpu, scale: 2)
            let v = randomTensor([batch, heads, nk, dh], dtype: dtype, seed: 3, backend: cpu)
            let dOut = randomTensor(q.shape, dtype: dtype, seed: 4, backend: cpu)
            let scale = 1 / Double(dh).squareRoot()
            let (out, lse) = cpu.attention(q: q, k: k, v: v, keyMask: nil, scale: scale)
            XCTAssertEqual(lse.shape, [batch, heads, nq])
            XCTAssertEqual(lse.dtype, dtype)
            let (dq, dk, dv) = cpu.attentionBackward(dOut, q: q, k: k, v: v, out: out, logSumExp: lse, keyMask: nil, scale: scale)

            let qs = cpu.downloadDouble(q), ks = cpu.downloadDouble(k), vs = cpu.downloadDouble(v)
            let g = cpu.downloadDouble(dOut)
            var outRef = [Double](), lseRef = [Double]()
            var dqRef = [Double](repeating: 0, count: qs.count), dkRef = [Double](repeating: 0, count: ks.count)
            var dvRef = [Double](repeating: 0, count: vs.count)
            for pair in 0..<(batch * heads) {
                let qo = pair * nq * dh, ko = pair * nk * dh
                // P[i][j] = softmax_j(scale · q_i · k_j)
                var p = [[Double]]()
                for i in 0..<nq {
                    let s = (0..<nk).map { j -> Double in
                        var dot = 0.0
                        for d in 0..<dh { dot += qs[qo + i * dh + d] * ks[ko + j * dh + d] }
                        return dot * scale
                    }
                    let total = s.map(exp).reduce(0, +)
                    lseRef.append(log(total))
                    p.append(s.map { exp($0) / total })
                    for d in 0..<dh {
                        var total = 0.0
                        for j in 0..<nk { total += p[i][j] * vs[ko + j * dh + d] }
                        outRef.append(total)
                    }
                }
                // dP = dO vᵀ; dS = P ⊙ (dP − Σ_j P dP) (the textbook form, not the kernel's dO·O shortcut).
                for i in 0..<nq {
                    let dp = (0..<nk).map { j -> Double in
                        var dot = 0.0
                        for d in 0..<dh { dot += g[qo + i * dh + d] * vs[ko + j * dh + d] }
                        return dot
                    }
                    let delta = zip(p[i], dp).map(*).reduce(0, +)
                    for j in 0..<nk {
                        let ds = p[i][j] * (dp[j] - delta)
                        for d in 0..<dh {
                            dvRef[ko + j * dh + d] += p[i][j] * g[qo + i * dh + d]
                            dqRef[qo + i * dh + d] += scale * ds * ks[ko + j * dh + d]
                            dkRef[ko + j * dh + d] += scale * ds * qs[qo + i * dh + d]
                        }
                    }
                }
            }
            assertClose(cpu.downloadDouble(out), outRef, relativeTolerance: tolerance, "attention out \(dtype)")
            assertClose(cpu.downloadDouble(lse), lseRef, relativeTolerance: tolerance, "attention lse \(dtype)")
            assertClose(cpu.downloadDouble(dq), dqRef, relativeTolerance: tolerance, "attention dq \(dtype)")
            assertClose(cpu.downloadDouble(dk), dkRef, relativeTolerance: tolerance, "attention dk \(dtype)")
            assertClose(cpu.downloadDouble(dv), dvRef, relativeTolerance: tolerance, "attention dv \(dtype)")
        }
    }

    func testKeyMaskEqualsAttentionOverTheAttendedKeys() {
        // Batch row 0 keeps keys {0, 2, 5} of 6, row 1 keeps none; compared per batch row with attention over the
        // kept keys alone, in f32 and f64.
        let (nk, kept) = (6, [[0, 2, 5], [Int]()])
        let flags = kept.flatMap { keys in (0..<nk).map { Int32(keys.contains($0) ? 1 : 0) } }
        for dtype in [DType.f32, .f64] {
            let q = randomTensor([batch, heads, nq, dh], dtype: dtype, seed: 5, backend: cpu, scale: 2)
            let k = randomTensor([batch, heads, nk, dh], dtype: dtype, seed: 6, backend: cpu, scale: 2)
            let v = randomTensor([batch, heads, nk, dh], dtype: dtype, seed: 7, backend: cpu)
            let dOut = randomTensor(q.shape, dtype: dtype, seed: 8, backend: cpu)
            let mask = cpu.upload(flags, shape: [batch, nk])
            let (out, lse) = cpu.attention(q: q, k: k, v: v, keyMask: mask, scale: 0.5)
            let (dq, dk, dv) = cpu.attentionBackward(dOut, q: q, k: k, v: v, out: out, logSumExp: lse, keyMask: mask,
                                                     scale: 0.5)
            let rowQ = nq * dh * heads, rowK = nk * dh * heads
            for b in 0..<batch {
                func row(_ t: Tensor, _ size: Int) -> [Double] { Array(cpu.downloadDouble(t)[(b * size)..<((b + 1) * size)]) }
                let dkRow = row(dk, rowK), dvRow = row(dv, rowK)
                guard !kept[b].isEmpty else {
                    XCTAssertEqual(row(out, rowQ), [Double](repeating: 0, count: rowQ), "fully masked out \(dtype)")
                    XCTAssertEqual(row(lse, nq * heads), [Double](repeating: -.infinity, count: nq * heads))
                    for (name, values) in [("dq", row(dq, rowQ)), ("dk", dkRow), ("dv", dvRow)] {
                        XCTAssertEqual(values, [Double](repeating: 0, count: values.count), "fully masked \(name) \(dtype)")
                    }
                    continue
                }
                // The kept keys of batch row b as their own [1, H, kept, Dh] problem.
                func gather(_ t: Tensor) -> Tensor {
                    let values = row(t, rowK)
                    var picked: [Double] = []
                    for h in 0..<heads {
                        for j in kept[b] {
                            let start: Int = (h * nk + j) * dh
                            picked += values[start..<(start + dh)]
                        }
                    }
                    return cpu.upload(picked, shape: [1, heads, kept[b].count, dh], dtype: dtype)
                }
                let qb = cpu.upload(row(q, rowQ), shape: [1, heads, nq, dh], dtype: dtype)
                let gb = cpu.upload(row(dOut, rowQ), shape: [1, heads, nq, dh], dtype: dtype)
                let (kb, vb) = (gather(k), gather(v))
                let reference = cpu.attention(q: qb, k: kb, v: vb, keyMask: nil, scale: 0.5)
                let grads = cpu.attentionBackward(gb, q: qb, k: kb, v: vb, out: reference.out,
                                                  logSumExp: reference.logSumExp, keyMask: nil, scale: 0.5)
                let tolerance = dtype == .f64 ? 1e-12 : 1e-5
                assertClose(row(out, rowQ), cpu.downloadDouble(reference.out), relativeTolerance: tolerance, "out \(dtype)")
                assertClose(row(lse, nq * heads), cpu.downloadDouble(reference.logSumExp), relativeTolerance: tolerance)
                assertClose(row(dq, rowQ), cpu.downloadDouble(grads.dq), relativeTolerance: tolerance, "dq \(dtype)")
                // Masked keys get exactly zero gradient; kept keys the reference's.
                let referenceK = cpu.downloadDouble(grads.dk), referenceV = cpu.downloadDouble(grads.dv)
                for h in 0..<heads {
                    for j in 0..<nk {
                        let ours = ((h * nk) + j) * dh
                        if let position = kept[b].firstIndex(of: j) {
                            let theirs = ((h * kept[b].count) + position) * dh
                            assertClose(Array(dkRow[ours..<ours + dh]), Array(referenceK[theirs..<theirs + dh]),
                                        relativeTolerance: tolerance, "dk key \(j) \(dtype)")
                            assertClose(Array(dvRow[ours..<ours + dh]), Array(referenceV[theirs..<theirs + dh]),
                                        relativeTolerance: tolerance, "dv key \(j) \(dtype)")
                        } else {
                            XCTAssertEqual(Array(dkRow[ours..<ours + dh]) + Array(dvRow[ours..<ours + dh]),
                                           [Double](repeating: 0, count: 2 * dh), "masked key \(j) \(dtype)")
                        }
                    }
                }
            }
        }
    }

    func testBiasedCausalAttentionMatchesExplicitSoftmax() {
        // softmax(scale · q kᵀ + bias[h]) v over the kept keys j (≤ i when causal), written out in f64. Batch row 1
        // drops key 0, so with the causal mask its query 0 has no key left and must output zeros.
        let n = 5
        let keepsKey = { (b: Int, j: Int) in !(b == 1 && j == 0) }
        let mask = cpu.upload((0..<batch).flatMap { b in (0..<n).map { Int32(keepsKey(b, $0) ? 1 : 0) } }, shape: [batch, n])
        for (dtype, tolerance) in [(DType.f32, 2e-5), (.f64, 1e-12)] {
            let q = randomTensor([batch, heads, n, dh], dtype: dtype, seed: 11, backend: cpu, scale: 2)
            let k = randomTensor([batch, heads, n, dh], dtype: dtype, seed: 12, backend: cpu, scale: 2)
            let v = randomTensor([batch, heads, n, dh], dtype: dtype, seed: 13, backend: cpu)
            let bias = randomTensor([heads, n, n], dtype: dtype, seed: 14, backend: cpu, scale: 3)
            let (qs, ks, vs, bs) = (cpu.downloadDouble(q), cpu.downloadDouble(k), cpu.downloadDouble(v), cpu.downloadDouble(bias))
            for (causal, withBias) in [(false, true), (true, false), (true, true)] {
                let out = cpu.biasedAttention(q: q, k: k, v: v, bias: withBias ? bias : nil, keyMask: mask, causal: causal,
                                              scale: 0.7)
                var expected = [Double]()
                for pair in 0..<(batch * heads) {
                    let (b, h) = (pair / heads, pair % heads), base = pair * n * dh
                    for i in 0..<n {
                        let keys = (0..<n).filter { keepsKey(b, $0) && (!causal || $0 <= i) }
                        let scores = keys.map { j -> Double in
                            var dot = 0.0
                            for d in 0..<dh { dot += qs[base + i * dh + d] * ks[base + j * dh + d] }
                            let added: Double = withBias ? bs[(h * n + i) * n + j] : 0
                            return 0.7 * dot + added
                        }
                        let top = scores.max() ?? 0, weights = scores.map { exp($0 - top) }
                        let total = weights.reduce(0, +)
                        for d in 0..<dh {
                            var value = 0.0
                            for (j, weight) in zip(keys, weights) { value += vs[base + j * dh + d] * weight / total }
                            expected.append(value)
                        }
                    }
                }
                assertClose(cpu.downloadDouble(out), expected, relativeTolerance: tolerance,
                            "biasedAttention causal \(causal) bias \(withBias) \(dtype)")
            }
            // No bias, no causal mask: the training attention's output.
            let plain = cpu.biasedAttention(q: q, k: k, v: v, bias: nil, keyMask: mask, causal: false, scale: 0.7)
            XCTAssertEqual(cpu.downloadDouble(plain),
                           cpu.downloadDouble(cpu.attention(q: q, k: k, v: v, keyMask: mask, scale: 0.7).out))
        }
    }

    func testAttentionIsStableForLargeScores() {
        // Scores of ±1e3 overflow a naive exp; the max shift keeps the output a convex combination of v.
        let q = cpu.upload([Double](repeating: 1, count: 4), shape: [1, 1, 1, 4], dtype: .f32)
        let k = cpu.upload([1000, 1000, 1000, 1000, -1000, -1000, -1000, -1000] as [Double], shape: [1, 1, 2, 4], dtype: .f32)
        let v = cpu.upload([1, 2, 3, 4, 5, 6, 7, 8] as [Double], shape: [1, 1, 2, 4], dtype: .f32)
        let (out, lse) = cpu.attention(q: q, k: k, v: v, keyMask: nil, scale: 1)
        XCTAssertEqual(cpu.download(out), [1, 2, 3, 4])
        XCTAssertEqual(cpu.download(lse), [4000])
    }
}
