import KinemaCPU
import KinemaTensor
import KinemaTestSupport
import XCTest

/// Every NN op against a naive scalar reference in f64, on odd sizes, for f32 and f64 storage. References read
/// the inputs back from the tensors, so f32 runs compare against the exact values the kernel saw.
final class NNOpsTests: XCTestCase {
    let cpu = CPUBackend(threads: 2)
    let (batch, tokens, width) = (2, 5, 7)

    /// Runs `body` for f32 and f64 with the tolerance each can meet.
    func forEachDType(_ body: (DType, Double) -> Void) {
        body(.f32, 2e-5)
        body(.f64, 1e-12)
    }

    func values(_ t: Tensor) -> [Double] { cpu.downloadDouble(t) }

    func testLayerNormMatchesReference() {
        forEachDType { dtype, tolerance in
            for affine in [false, true] {
                let x = randomTensor([batch, tokens, width], dtype: dtype, seed: 1, backend: cpu, scale: 3)
                let w = affine ? randomTensor([width], dtype: dtype, seed: 2, backend: cpu) : nil
                let b = affine ? randomTensor([width], dtype: dtype, seed: 3, backend: cpu) : nil
                let dy = randomTensor(x.shape, dtype: dtype, seed: 4, backend: cpu)
                let eps = 1e-5
                let (y, mean, rstd) = cpu.layerNorm(x, weight: w, bias: b, eps: eps)
                XCTAssertEqual(mean.shape, [batch, tokens])
                XCTAssertEqual(mean.dtype, dtype)
                // Accumulation: start the parameter gradients from known non-zero values.
                let dW = affine ? randomTensor([width], dtype: dtype, seed: 5, backend: cpu) : nil
                let dB = affine ? randomTensor([width], dtype: dtype, seed: 6, backend: cpu) : nil
                let dW0 = dW.map(values), dB0 = dB.map(values)
                let dx = cpu.layerNormBackward(dy, x: x, weight: w, mean: mean, rstd: rstd, dWeight: dW, dBias: dB)

                let xs = values(x), ws = w.map(values) ?? Array(repeating: 1, count: width)
                let bs = b.map(values) ?? Array(repeating: 0, count: width), g = values(dy)
                var yRef = [Double](), dxRef = [Double](), meanRef = [Double](), rstdRef = [Double]()
                var dWRef = dW0 ?? [], dBRef = dB0 ?? []
                for row in 0..<(batch * tokens) {
                    let r = Array(xs[(row * width)..<((row + 1) * width)])
                    let mu = r.reduce(0, +) / Double(width)
                    let variance = r.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Double(width)
                    let s = 1 / (variance + eps).squareRoot()
                    meanRef.append(mu)
                    rstdRef.append(s)
                    let xhat = r.map { ($0 - mu) * s }
                    let gh = (0..<width).map { g[row * width + $0] * ws[$0] }
                    let meanG = gh.reduce(0, +) / Double(width)
                    let meanGX = zip(gh, xhat).map(*).reduce(0, +) / Double(width)
                    for j in 0..<width {
                        yRef.append(xhat[j] * ws[j] + bs[j])
                        dxRef.append(s * (gh[j] - meanG - xhat[j] * meanGX))
                        if affine {
                            dWRef[j] += g[row * width + j] * xhat[j]
                            dBRef[j] += g[row * width + j]
                        }
                    }
                }
                assertClose(values(y), yRef, relativeTolerance: tolerance, "layerNorm y \(dtype) affine \(affine)")
                assertClose(values(mean), meanRef, relativeTolerance: tolerance, "layerNorm mean \(dtype)")
                assertClose(values(rstd), rstdRef, relativeTolerance: tolerance, "layerNorm rstd \(dtype)")
                assertClose(values(dx), dxRef, relativeTolerance: tolerance, "layerNorm dx \(dtype) affine \(affine)")
                if let dW, let dB {
                    assertClose(values(dW), dWRef, relativeTolerance: tolerance, "layerNorm dWeight \(dtype)")
                    assertClose(values(dB), dBRef, relativeTolerance: tolerance, "layerNorm dBias \(dtype)")
                }
            }
        }
    }

    /// GroupNorm: 6 channels in 3 groups over 5 × 3 positions, with and without the affine parameters.
    func testGroupNormMatchesReference() {
        forEachDType { dtype, tolerance in
            let (channels, groups, plane) = (6, 3, 15)
            let x = randomTensor([batch, channels, 5, 3], dtype: dtype, seed: 31, backend: cpu, scale: 3)
            let w = randomTensor([channels], dtype: dtype, seed: 32, backend: cpu)
            let b = randomTensor([channels], dtype: dtype, seed: 33, backend: cpu)
            let (xs, ws, bs) = (cpu.downloadDouble(x), cpu.downloadDouble(w), cpu.downloadDouble(b))
            for affine in [true, false] {
                var expected = [Double](repeating: 0, count: xs.count)
                let per = channels / groups * plane
                for row in 0..<(batch * groups) {
                    let values = Array(xs[(row * per)..<((row + 1) * per)])
                    let mean = values.reduce(0, +) / Double(per)
                    let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(per)
                    for (i, value) in values.enumerated() {
                        let channel = (row % groups) * (channels / groups) + i / plane
                        let normed = (value - mean) / (variance + 1e-6).squareRoot()
                        expected[row * per + i] = affine ? normed * ws[channel] + bs[channel] : normed
                    }
                }
                let y = cpu.groupNorm(x, weight: affine ? w : nil, bias: affine ? b : nil, groups: groups, eps: 1e-6)
                assertClose(cpu.downloadDouble(y), expected, relativeTolerance: tolerance, "groupNorm \(dtype) \(affine)")
            }
        }
    }

    func testModulateAndGatedResidualMatchReference() {
        forEachDType { dtype, tolerance in
            let x = randomTensor([batch, tokens, width], dtype: dtype, seed: 10, backend: cpu)
            let y = randomTensor(x.shape, dtype: dtype, seed: 11, backend: cpu)
            let dy = randomTensor(x.shape, dtype: dtype, seed: 12, backend: cpu)
            let shift = randomTensor([batch, width], dtype: dtype, seed: 13, backend: cpu)
            let scale = randomTensor([batch, width], dtype: dtype, seed: 14, backend: cpu)
            let xs = values(x), ys = values(y), g = values(dy), sh = values(shift), sc = values(scale)

            var modulated = [Double](), dxRef = [Double](), gated = [Double](), dYRef = [Double]()
            var dShiftRef = [Double](repeating: 0, count: batch * width), dScaleRef = dShiftRef, dGateRef = dShiftRef
            for i in 0..<xs.count {
                let p = (i / (tokens * width)) * width + i % width  // (b, d) of element i
                modulated.append(xs[i] * (1 + sc[p]) + sh[p])
                dxRef.append(g[i] * (1 + sc[p]))
                dShiftRef[p] += g[i]
                dScaleRef[p] += g[i] * xs[i]
                gated.append(xs[i] + sc[p] * ys[i])  // scale doubles as the gate
                dYRef.append(g[i] * sc[p])
                dGateRef[p] += g[i] * ys[i]
            }
            assertClose(values(cpu.modulate(x, shift: shift, scale: scale)), modulated, relativeTolerance: tolerance)
            let (dx, dShift, dScale) = cpu.modulateBackward(dy, x: x, scale: scale)
            assertClose(values(dx), dxRef, relativeTolerance: tolerance, "modulate dx \(dtype)")
            assertClose(values(dShift), dShiftRef, relativeTolerance: tolerance, "modulate dShift \(dtype)")
            assertClose(values(dScale), dScaleRef, relativeTolerance: tolerance, "modulate dScale \(dtype)")
            XCTAssertEqual(dShift.shape, [batch, width])

            assertClose(values(cpu.gatedResidual(x, gate: scale, y)), gated, relativeTolerance: tolerance)
            let (dGate, dY) = cpu.gatedResidualBackward(dy, gate: scale, y: y)
            assertClose(values(dGate), dGateRef, relativeTolerance: tolerance, "gatedResidual dGate \(dtype)")
            assertClose(values(dY), dYRef, relativeTolerance: tolerance, "gatedResidual dY \(dtype)")
            // With a bias gradient: the same outputs, and Σ over batch and tokens of dY added to what it held.
            let biasGradient = cpu.upload([Float](repeating: 0.5, count: width), shape: [width], dtype: dtype)
            let fused = cpu.gatedResidualBackward(dy, gate: scale, y: y, biasGradient: biasGradient)
            XCTAssertEqual(values(fused.dY), values(dY))
            XCTAssertEqual(values(fused.dGate), values(dGate))
            let dbRef = (0..<width).map { j in 0.5 + stride(from: j, to: dYRef.count, by: width).map { dYRef[$0] }.reduce(0, +) }
            assertClose(values(biasGradient), dbRef, relativeTolerance: tolerance, "gatedResidual bias gradient \(dtype)")
        }
    }

    func testGatedResidualLayerNormModulateMatchesReference() {
        forEachDType { dtype, tolerance in
            let x = randomTensor([batch, tokens, width], dtype: dtype, seed: 40, backend: cpu, scale: 3)
            let y = randomTensor(x.shape, dtype: dtype, seed: 41, backend: cpu)
            let gate = randomTensor([batch, width], dtype: dtype, seed: 42, backend: cpu)
            let shift = randomTensor([batch, width], dtype: dtype, seed: 43, backend: cpu)
            let scale = randomTensor([batch, width], dtype: dtype, seed: 44, backend: cpu)
            let eps = 1e-6
            let (sum, normed, mean, rstd) = cpu.gatedResidualLayerNormModulate(x, gate: gate, y, shift: shift,
                                                                               scale: scale, eps: eps)
            let xs = values(x), ys = values(y), g = values(gate), sh = values(shift), sc = values(scale)
            var sumRef = [Double](), normedRef = [Double](), meanRef = [Double](), rstdRef = [Double]()
            for row in 0..<(batch * tokens) {
                let p = (row / tokens) * width  // the sample's row of gate, shift and scale
                let r = (0..<width).map { xs[row * width + $0] + g[p + $0] * ys[row * width + $0] }
                let mu = r.reduce(0, +) / Double(width)
                let s = 1 / (r.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Double(width) + eps).squareRoot()
                sumRef += r
                meanRef.append(mu)
                rstdRef.append(s)
                normedRef += (0..<width).map { (r[$0] - mu) * s * (1 + sc[p + $0]) + sh[p + $0] }
            }
            assertClose(values(sum), sumRef, relativeTolerance: tolerance, "gatedResidualLayerNormModulate sum \(dtype)")
            assertClose(values(normed), normedRef, relativeTolerance: tolerance, "gatedResidualLayerNormModulate y \(dtype)")
            assertClose(values(mean), meanRef, relativeTolerance: tolerance, "gatedResidualLayerNormModulate mean \(dtype)")
            assertClose(values(rstd), rstdRef, relativeTolerance: tolerance, "gatedResidualLayerNormModulate rstd \(dtype)")
        }
    }

    func testModulateTreatsAllMiddleAxesAsTokens() {
        let x = randomTensor([2, 3, 2, 4], seed: 20, backend: cpu)
        let shift = randomTensor([2, 4], seed: 21, backend: cpu), scale = randomTensor([2, 4], seed: 22, backend: cpu)
        let flat = cpu.modulate(x.reshaped([2, 6, 4]), shift: shift, scale: scale)
        XCTAssertEqual(values(cpu.modulate(x, shift: shift, scale: scale)), values(flat))
    }

    func testActivationsMatchReference() {
        forEachDType { dtype, tolerance in
            let x = randomTensor([3, 11], dtype: dtype, seed: 30, backend: cpu, scale: 4)
            let dy = randomTensor(x.shape, dtype: dtype, seed: 31, backend: cpu)
            let xs = values(x), g = values(dy)
            let c = (2 / Double.pi).squareRoot(), a = 0.044715
            let gelu = xs.map { 0.5 * $0 * (1 + tanh(c * ($0 + a * $0 * $0 * $0))) }
            let dGelu = (0..<xs.count).map { i -> Double in
                let v = xs[i]
                let t = tanh(c * (v + a * v * v * v))
                let derivative: Double = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * c * (1 + 3 * a * v * v)
                return g[i] * derivative
            }
            let sigmoid = xs.map { (v: Double) -> Double in 1 / (1 + exp(-v)) }
            let silu = zip(xs, sigmoid).map(*)
            let dSilu = (0..<xs.count).map { i -> Double in
                let s: Double = sigmoid[i]
                return g[i] * s * (1 + xs[i] * (1 - s))
            }
            assertClose(values(cpu.gelu(x)), gelu, relativeTolerance: tolerance, "gelu \(dtype)")
            assertClose(values(cpu.geluBackward(dy, x: x)), dGelu, relativeTolerance: tolerance, "geluBackward \(dtype)")
            assertClose(values(cpu.silu(x)), silu, relativeTolerance: tolerance, "silu \(dtype)")
            assertClose(values(cpu.siluBackward(dy, x: x)), dSilu, relativeTolerance: tolerance, "siluBackward \(dtype)")
        }
    }

    func testEmbeddingMatchesReference() {
        forEachDType { dtype, tolerance in
            let (rows, dim) = (4, 5)
            let table = randomTensor([rows, dim], dtype: dtype, seed: 40, backend: cpu)
            let labels: [Int32] = [3, 0, 3, 2, 3]  // repeats must accumulate
            let indices = cpu.upload(labels, shape: [labels.count])
            let dOut = randomTensor([labels.count, dim], dtype: dtype, seed: 41, backend: cpu)
            let dTable = randomTensor([rows, dim], dtype: dtype, seed: 42, backend: cpu)
            var dTableRef = values(dTable)
            let ts = values(table), g = values(dOut)
            var lookedUp = [Double]()
            for (i, label) in labels.enumerated() {
                lookedUp += ts[(Int(label) * dim)..<((Int(label) + 1) * dim)]
                for j in 0..<dim { dTableRef[Int(label) * dim + j] += g[i * dim + j] }
            }
            let out = cpu.embedding(table, indices: indices)
            XCTAssertEqual(out.shape, [labels.count, dim])
            XCTAssertEqual(values(out), lookedUp)
            cpu.embeddingBackward(dOut, indices: indices, into: dTable)
            assertClose(values(dTable), dTableRef, relativeTolerance: tolerance, "embeddingBackward \(dtype)")
        }
    }

    func testTimestepEmbeddingMatchesReference() {
        forEachDType { dtype, tolerance in
            for (dim, shift) in [(8, 0.0), (9, 0.0), (8, 1.0)] {
                let times = [0.0, 1.0, 17.0, 999.0]
                let t = cpu.upload(times, shape: [times.count], dtype: dtype)
                let half = dim / 2, maxPeriod = 10000.0
                var expected = [Double]()
                for time in times {
                    let arguments = (0..<half).map { time * exp(-log(maxPeriod) * Double($0) / (Double(half) - shift)) }
                    expected += arguments.map(cos) + arguments.map(sin) + (dim % 2 == 1 ? [0] : [])
                }
                let out = cpu.timestepEmbedding(t, dim: dim, maxPeriod: maxPeriod, frequencyShift: shift)
                XCTAssertEqual(out.shape, [times.count, dim])
                XCTAssertEqual(out.dtype, dtype)
                // f32 rounds t · f before the trig: an argument near 1000 carries ~1e-4 absolute error.
                assertClose(values(out), expected, relativeTolerance: dtype == .f32 ? 2e-4 : tolerance,
                            "timestepEmbedding \(dtype) dim \(dim)")
            }
        }
    }
}
