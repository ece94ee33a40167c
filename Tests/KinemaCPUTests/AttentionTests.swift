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
            let (out, lse) = cpu.attention(q: q, k: k, v: v, scale: scale)
            XCTAssertEqual(lse.shape, [batch, heads, nq])
            XCTAssertEqual(lse.dtype, dtype)
            let (dq, dk, dv) = cpu.attentionBackward(dOut, q: q, k: k, v: v, out: out, logSumExp: lse, scale: scale)

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

    func testAttentionIsStableForLargeScores() {
        // Scores of ±1e3 overflow a naive exp; the max shift keeps the output a convex combination of v.
        let q = cpu.upload([Double](repeating: 1, count: 4), shape: [1, 1, 1, 4], dtype: .f32)
        let k = cpu.upload([1000, 1000, 1000, 1000, -1000, -1000, -1000, -1000] as [Double], shape: [1, 1, 2, 4], dtype: .f32)
        let v = cpu.upload([1, 2, 3, 4, 5, 6, 7, 8] as [Double], shape: [1, 1, 2, 4], dtype: .f32)
        let (out, lse) = cpu.attention(q: q, k: k, v: v, scale: 1)
        XCTAssertEqual(cpu.download(out), [1, 2, 3, 4])
        XCTAssertEqual(cpu.download(lse), [4000])
    }
}
