import KinemaCPU
import KinemaTensor
import KinemaTestSupport
import XCTest

/// One thread and two threads must give bit-identical results: every reduction has a fixed order. Sizes are
/// chosen large enough that two threads really split the work (blockedSum needs ≥ 8 blocks of 8192, column
/// splits ≥ 128 columns, attention ≥ 2 (batch, head) pairs).
final class ThreadDeterminismTests: XCTestCase {
    let one = CPUBackend(threads: 1)
    let two = CPUBackend(threads: 2)

    func bits(_ backend: CPUBackend, _ t: Tensor) -> [UInt8] { backend.downloadBytes(t) }

    func testReductionsDoNotDependOnThreadCount() {
        let x = randomTensor([70_000], dtype: .f32, seed: 1, backend: one)
        XCTAssertEqual(one.sum(x).bitPattern, two.sum(x).bitPattern)
        XCTAssertEqual(one.sumOfSquares(x).bitPattern, two.sumOfSquares(x).bitPattern)

        let dy = randomTensor([300, 160], dtype: .f32, seed: 2, backend: one)
        let start = randomTensor([160], dtype: .f32, seed: 3, backend: one)
        let (a, b) = (one.clone(start), two.clone(start))
        one.accumulateBiasGradient(dy, into: a)
        two.accumulateBiasGradient(dy, into: b)
        XCTAssertEqual(bits(one, a), bits(two, b))
    }

    func testNNOpsDoNotDependOnThreadCount() {
        let (batch, tokens, width) = (2, 150, 160)
        let x = randomTensor([batch, tokens, width], dtype: .f32, seed: 4, backend: one)
        let dy = randomTensor(x.shape, dtype: .f32, seed: 5, backend: one)
        let weight = randomTensor([width], dtype: .f32, seed: 6, backend: one)
        let bias = randomTensor([width], dtype: .f32, seed: 7, backend: one)
        let scale = randomTensor([batch, width], dtype: .f32, seed: 8, backend: one)

        func run(_ cpu: CPUBackend) -> [[UInt8]] {
            let (y, mean, rstd) = cpu.layerNorm(x, weight: weight, bias: bias, eps: 1e-6)
            let dWeight = cpu.zeros([width], dtype: .f32), dBias = cpu.zeros([width], dtype: .f32)
            let dx = cpu.layerNormBackward(dy, x: x, weight: weight, mean: mean, rstd: rstd, dWeight: dWeight, dBias: dBias)
            let (mx, dShift, dScale) = cpu.modulateBackward(dy, x: x, scale: scale)
            let (dGate, dY) = cpu.gatedResidualBackward(dy, gate: scale, y: x)
            let heads = x.reshaped([batch, 2, tokens, width / 2])
            let (out, lse) = cpu.attention(q: heads, k: heads, v: heads, keyMask: nil, scale: 0.1)
            let (dq, dk, dv) = cpu.attentionBackward(dy.reshaped(heads.shape), q: heads, k: heads, v: heads, out: out,
                                                     logSumExp: lse, keyMask: nil, scale: 0.1)
            let table = cpu.zeros([3, width], dtype: .f32)
            let labels = cpu.upload((0..<(batch * tokens)).map { Int32($0 % 3) }, shape: [batch * tokens])
            cpu.embeddingBackward(dy.reshaped([batch * tokens, width]), indices: labels, into: table)
            return [y, mean, rstd, dx, dWeight, dBias, mx, dShift, dScale, dGate, dY, cpu.gelu(x), cpu.silu(x),
                    out, lse, dq, dk, dv, table].map { cpu.downloadBytes($0) }
        }
        let (single, double) = (run(one), run(two))
        for (i, (a, b)) in zip(single, double).enumerated() { XCTAssertEqual(a, b, "output \(i) differs") }
    }
}
