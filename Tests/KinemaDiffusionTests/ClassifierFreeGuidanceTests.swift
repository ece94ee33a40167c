import KinemaCPU
import KinemaDiffusion
import KinemaTensor
import XCTest

final class ClassifierFreeGuidanceTests: XCTestCase {
    let backend = CPUBackend()

    final class Recorder {
        var calls: [(shape: [Int], timesteps: [Int], labels: [Int], x: [Double])] = []
    }

    /// A toy class-conditional model with a 2C output: channel k of sample i is
    /// x[i, k mod C] · (label_i + 1) + k + t_i / 1000, so every channel depends on the label.
    private func toyModel(_ recorder: Recorder) -> ConditionalDenoiser {
        { [backend] x, timesteps, labels in
            recorder.calls.append((x.shape, timesteps, labels, backend.downloadDouble(x)))
            let channels = x.shape[1], plane = x.shape.dropFirst(2).reduce(1, *)
            let values = backend.downloadDouble(x)
            var out: [Double] = []
            for i in 0..<x.shape[0] {
                for k in 0..<(2 * channels) {
                    for p in 0..<plane {
                        let input = values[(i * channels + k % channels) * plane + p]
                        out.append(input * Double(labels[i] + 1) + Double(k) + Double(timesteps[i]) / 1000)
                    }
                }
            }
            return backend.upload(out, shape: [x.shape[0], 2 * channels] + x.shape.dropFirst(2), dtype: x.dtype)
        }
    }

    private let xValues = (0..<(2 * 4 * 3 * 3)).map { sin(Double($0) * 0.37) }

    func testGuidedDenoiserRunsOnceOnTheDoubledBatch() {
        let recorder = Recorder()
        let model = toyModel(recorder)
        let x = backend.upload(xValues, shape: [2, 4, 3, 3], dtype: .f64)
        let labels = [3, 7], null = 10, scale = 4.0
        let guided = ClassifierFreeGuidance.denoiser(model: model, labels: labels, nullLabel: null, scale: scale,
                                                     backend: backend)
        let output = guided(x, [250, 250])
        XCTAssertEqual(output.shape, [2, 8, 3, 3])
        XCTAssertEqual(recorder.calls.count, 1)
        let call = recorder.calls[0]
        XCTAssertEqual(call.shape, [4, 4, 3, 3])
        XCTAssertEqual(call.timesteps, [250, 250, 250, 250])
        XCTAssertEqual(call.labels, [3, 7, 10, 10])
        XCTAssertEqual(Array(call.x[0..<72]), xValues)
        XCTAssertEqual(Array(call.x[72...]), xValues)

        // ε channels (all C = 4 by default): ε_u + s (ε_c − ε_u); variance channels: the conditional half's.
        let values = backend.downloadDouble(output)
        let plane = 9
        for i in 0..<2 {
            for k in 0..<8 {
                for p in 0..<plane {
                    let input = xValues[(i * 4 + k % 4) * plane + p]
                    let conditional = input * Double(labels[i] + 1) + Double(k) + 0.25
                    let unconditional = input * Double(null + 1) + Double(k) + 0.25
                    let expected = k < 4 ? unconditional + scale * (conditional - unconditional) : conditional
                    XCTAssertEqual(values[(i * 8 + k) * plane + p], expected, accuracy: 1e-12, "sample \(i) channel \(k)")
                }
            }
        }
    }

    func testDiTThreeChannelGuidanceAndCombine() {
        // DiT's forward_with_cfg on a doubled output [cond; uncond]: guided channels duplicated to both halves,
        // everything past them (ε channel 3 and the variance) kept per half.
        let half = 2, channels = 8, plane = 4
        let outputValues = (0..<(2 * half * channels * plane)).map { cos(Double($0) * 0.11) * 3 }
        let output = backend.upload(outputValues, shape: [2 * half, channels, 2, 2], dtype: .f64)
        let scale = 1.5
        let combined = backend.downloadDouble(
            ClassifierFreeGuidance.combine(output, scale: scale, guidedChannels: 3, backend: backend))
        func at(_ v: [Double], _ i: Int, _ k: Int, _ p: Int) -> Double { v[(i * channels + k) * plane + p] }
        for i in 0..<(2 * half) {
            for k in 0..<channels {
                for p in 0..<plane {
                    let expected: Double
                    if k < 3 {
                        let c = at(outputValues, i % half, k, p), u = at(outputValues, half + i % half, k, p)
                        expected = u + scale * (c - u)
                    } else {
                        expected = at(outputValues, i, k, p)
                    }
                    XCTAssertEqual(at(combined, i, k, p), expected, accuracy: 1e-12, "row \(i) channel \(k)")
                }
            }
        }
        // The conditional half of combine is what the guided denoiser returns.
        let conditionalHalf = ClassifierFreeGuidance.combineConditionalHalf(output, scale: scale, guidedChannels: 3,
                                                                            backend: backend)
        XCTAssertEqual(conditionalHalf.shape, [half, channels, 2, 2])
        XCTAssertEqual(backend.downloadDouble(conditionalHalf), Array(combined[0..<(half * channels * plane)]))

        // Through the denoiser with guidedChannels: 3.
        let recorder = Recorder()
        let x = backend.upload(xValues, shape: [2, 4, 3, 3], dtype: .f64)
        let guided = ClassifierFreeGuidance.denoiser(model: toyModel(recorder), labels: [1, 2], nullLabel: 10,
                                                     scale: 4, guidedChannels: 3, backend: backend)
        let out = backend.downloadDouble(guided(x, [5, 9]))
        XCTAssertEqual(recorder.calls[0].timesteps, [5, 9, 5, 9])
        let input = xValues[3 * 9]   // sample 0, channel 3, element 0
        XCTAssertEqual(out[3 * 9], input * 2 + 3 + 0.005, accuracy: 1e-12, "channel 3 is not guided")
    }

    func testScaleOneRunsTheConditionalModelOnce() {
        let recorder = Recorder()
        let x = backend.upload(xValues, shape: [2, 4, 3, 3], dtype: .f64)
        let guided = ClassifierFreeGuidance.denoiser(model: toyModel(recorder), labels: [3, 7], nullLabel: 10, scale: 1,
                                                     backend: backend)
        let output = guided(x, [100, 200])
        XCTAssertEqual(recorder.calls.count, 1)
        XCTAssertEqual(recorder.calls[0].shape, [2, 4, 3, 3])
        XCTAssertEqual(recorder.calls[0].labels, [3, 7])
        let direct = toyModel(Recorder())(x, [100, 200], [3, 7])
        XCTAssertEqual(backend.downloadDouble(output), backend.downloadDouble(direct))
    }

    func testGuidedSamplingEndToEnd() throws {
        // A guided DDIM run is deterministic and differs from the unguided one.
        let sampler = try DiffusionSampler(method: .ddim(eta: 0), steps: 5)
        func run(scale: Double) -> [Float] {
            var random = RandomStream(seed: 3)
            let denoiser = ClassifierFreeGuidance.denoiser(model: toyModelScaled(), labels: [0, 1], nullLabel: 2,
                                                           scale: scale, backend: backend)
            return backend.download(sampler.ddimLoop(shape: [2, 4, 3, 3], denoiser: denoiser, random: &random,
                                                     backend: backend))
        }
        XCTAssertEqual(run(scale: 4), run(scale: 4))
        XCTAssertNotEqual(run(scale: 4), run(scale: 1))
    }

    /// A tame model for sampling: ε̂ = 0.1 · (label + 1) · x, v = 0.
    private func toyModelScaled() -> ConditionalDenoiser {
        { [backend] x, _, labels in
            let epsilon = backend.rowwiseAxpby(labels.map { 0.1 * Double($0 + 1) }, x,
                                               [Double](repeating: 0, count: labels.count), x)
            return backend.concat([epsilon, backend.zeros(x.shape, dtype: x.dtype)], axis: 1)
        }
    }
}
