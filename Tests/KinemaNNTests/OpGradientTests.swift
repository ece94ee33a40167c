import KinemaCPU
import KinemaTensor
import KinemaTestSupport
import XCTest

/// Finite-difference checks (f64) of every backward in NNOps. Loss L = Σ op(inputs) ⊙ R, so each backward gets
/// R as its upstream gradient and must return dL/d(input).
final class OpGradientTests: XCTestCase {
    let cpu = CPUBackend(threads: 2)
    let (batch, tokens, width) = (2, 5, 7)

    func random(_ shape: [Int], _ seed: UInt64, scale: Double = 1) -> Tensor {
        randomTensor(shape, seed: seed, backend: cpu, scale: scale)
    }

    func testLayerNorm() {
        for affine in [false, true] {
            let x = random([batch, tokens, width], 1, scale: 2)
            let w = affine ? random([width], 2) : nil, b = affine ? random([width], 3) : nil
            let r = random(x.shape, 4)
            let (_, mean, rstd) = cpu.layerNorm(x, weight: w, bias: b, eps: 1e-5)
            let dW = affine ? cpu.zeros([width], dtype: .f64) : nil, dB = affine ? cpu.zeros([width], dtype: .f64) : nil
            let dx = cpu.layerNormBackward(r, x: x, weight: w, mean: mean, rstd: rstd, dWeight: dW, dBias: dB)
            var checks = [(name: "layerNorm x", tensor: x, analytic: dx)]
            if let w, let b, let dW, let dB { checks += [("layerNorm weight", w, dW), ("layerNorm bias", b, dB)] }
            checkGradients(checks, backend: cpu) {
                weightedSum(cpu.layerNorm(x, weight: w, bias: b, eps: 1e-5).y, r, backend: cpu)
            }
        }
    }

    func testRMSNorm() {
        for weighted in [false, true] {
            let x = random([batch, tokens, width], 1, scale: 2), w = weighted ? random([width], 2) : nil
            let r = random(x.shape, 4)
            let (_, rstd) = cpu.rmsNorm(x, weight: w, eps: 1e-5)
            let dW = weighted ? cpu.zeros([width], dtype: .f64) : nil
            let dx = cpu.rmsNormBackward(r, x: x, weight: w, rstd: rstd, dWeight: dW)
            var checks = [(name: "rmsNorm x", tensor: x, analytic: dx)]
            if let w, let dW { checks.append(("rmsNorm weight", w, dW)) }
            checkGradients(checks, backend: cpu) { weightedSum(cpu.rmsNorm(x, weight: w, eps: 1e-5).y, r, backend: cpu) }
        }
        // The forward itself: x / √(mean(x²) + eps) · w, row by row.
        let x = random([3, width], 9), w = random([width], 10)
        let xs = cpu.downloadDouble(x), ws = cpu.downloadDouble(w)
        let expected = (0..<3).flatMap { row -> [Double] in
            let values = Array(xs[(row * width)..<((row + 1) * width)])
            let r = 1 / (values.map { $0 * $0 }.reduce(0, +) / Double(width) + 1e-5).squareRoot()
            return values.enumerated().map { $0.element * r * ws[$0.offset] }
        }
        assertClose(cpu.downloadDouble(cpu.rmsNorm(x, weight: w, eps: 1e-5).y), expected, relativeTolerance: 1e-13,
                    "rmsNorm forward")
    }

    func testModulate() {
        let x = random([batch, tokens, width], 5), shift = random([batch, width], 6), scale = random([batch, width], 7)
        let r = random(x.shape, 8)
        let (dx, dShift, dScale) = cpu.modulateBackward(r, x: x, scale: scale)
        checkGradients([("modulate x", x, dx), ("modulate shift", shift, dShift), ("modulate scale", scale, dScale)],
                       backend: cpu) {
            weightedSum(cpu.modulate(x, shift: shift, scale: scale), r, backend: cpu)
        }
    }

    func testGatedResidual() {
        let x = random([batch, tokens, width], 9), gate = random([batch, width], 10), y = random(x.shape, 11)
        let r = random(x.shape, 12)
        let (dGate, dY) = cpu.gatedResidualBackward(r, gate: gate, y: y)
        // dx is dOut itself (the protocol returns no dx).
        checkGradients([("gatedResidual x", x, r), ("gatedResidual gate", gate, dGate), ("gatedResidual y", y, dY)],
                       backend: cpu) {
            weightedSum(cpu.gatedResidual(x, gate: gate, y), r, backend: cpu)
        }
    }

    func testActivations() {
        let x = random([3, 13], 13, scale: 4), r = random(x.shape, 14)
        checkGradients([("gelu x", x, cpu.geluBackward(r, x: x))], backend: cpu) {
            weightedSum(cpu.gelu(x), r, backend: cpu)
        }
        checkGradients([("silu x", x, cpu.siluBackward(r, x: x))], backend: cpu) {
            weightedSum(cpu.silu(x), r, backend: cpu)
        }
    }

    func testAttentionWithFewerKeysThanQueries() {
        let (heads, nq, nk, dh) = (2, 5, 3, 4)
        let q = random([batch, heads, nq, dh], 15, scale: 2), k = random([batch, heads, nk, dh], 16, scale: 2)
        let v = random([batch, heads, nk, dh], 17), r = random(q.shape, 18)
        let scale = 0.5
        let (out, lse) = cpu.attention(q: q, k: k, v: v, keyMask: nil, scale: scale)
        let (dq, dk, dv) = cpu.attentionBackward(r, q: q, k: k, v: v, out: out, logSumExp: lse, keyMask: nil, scale: scale)
        checkGradients([("attention q", q, dq), ("attention k", k, dk), ("attention v", v, dv)], backend: cpu) {
            weightedSum(cpu.attention(q: q, k: k, v: v, keyMask: nil, scale: scale).out, r, backend: cpu)
        }
    }

    func testAttentionWithKeyMask() {
        // Batch row 0 attends to keys 0, 2 and 3 of 4; row 1 to none (zero output, zero gradients).
        let (heads, nq, nk, dh) = (2, 3, 4, 4)
        let q = random([batch, heads, nq, dh], 21, scale: 2), k = random([batch, heads, nk, dh], 22, scale: 2)
        let v = random([batch, heads, nk, dh], 23), r = random(q.shape, 24)
        let mask = cpu.upload([Int32]([1, 0, 1, 1, 0, 0, 0, 0]), shape: [batch, nk])
        let scale = 0.5
        let (out, lse) = cpu.attention(q: q, k: k, v: v, keyMask: mask, scale: scale)
        let (dq, dk, dv) = cpu.attentionBackward(r, q: q, k: k, v: v, out: out, logSumExp: lse, keyMask: mask,
                                                 scale: scale)
        checkGradients([("masked attention q", q, dq), ("masked attention k", k, dk), ("masked attention v", v, dv)],
                       backend: cpu) {
            weightedSum(cpu.attention(q: q, k: k, v: v, keyMask: mask, scale: scale).out, r, backend: cpu)
        }
    }

    func testEmbedding() {
        let table = random([4, width], 19)
        let indices = cpu.upload([Int32]([1, 3, 1, 0, 1]), shape: [5])
        let r = random([5, width], 20)
        let dTable = cpu.zeros(table.shape, dtype: .f64)
        cpu.embeddingBackward(r, indices: indices, into: dTable)
        checkGradients([("embedding table", table, dTable)], backend: cpu) {
            weightedSum(cpu.embedding(table, indices: indices), r, backend: cpu)
        }
    }
}
