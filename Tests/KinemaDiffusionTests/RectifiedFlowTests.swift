import KinemaCPU
import KinemaDiffusion
import KinemaTensor
import XCTest

/// Against Open-Sora 1.2's own scheduler (Tests/Fixtures/rectified_flow.safetensors, scripts/make_golden_rflow.py).
/// The fixture is f32 (Open-Sora computes in f32); Kinema runs in f64 here, so the bounds are f32 rounding.
final class RectifiedFlowTests: XCTestCase {
    let backend = CPUBackend()

    func testTimestepShiftMatchesOpenSora() throws {
        let io = try Fixture("rectified_flow.safetensors")
        let flow = RectifiedFlow()
        let t = io.doubles("transform_t"), sizes = io.ints("transform_sizes"), expected = io.doubles("transform_out")
        for s in 0..<3 {
            let size = RectifiedFlow.InputSize(height: sizes[3 * s], width: sizes[3 * s + 1], frames: sizes[3 * s + 2])
            let shifted = t.map { flow.shifted($0, for: size) }
            assertAbsolutelyClose(shifted, Array(expected[(5 * s)..<(5 * s + 5)]), 1e-4, "shift for \(size)")
        }
        // 256² images shift toward the data end (ratio ½), 720p × 51 frames far toward the noise end.
        XCTAssertLessThan(flow.shifted(500, for: .init(height: 256, width: 256, frames: 1)), 500)
        XCTAssertEqual(flow.shifted(500, for: .init(height: 720, width: 1280, frames: 15)), 879, accuracy: 1)
        XCTAssertEqual(RectifiedFlow(shift: nil).shifted(321, for: .init(height: 720, width: 1280, frames: 15)), 321)
    }

    func testInterpolationAndMaskedLossMatchOpenSora() throws {
        let io = try Fixture("rectified_flow.safetensors")
        let flow = RectifiedFlow()
        let x0 = io.tensor("x0", on: backend), noise = io.tensor("noise", on: backend)
        let timesteps = io.doubles("timesteps")
        let rows = frameMask(io.doubles("mask"), frames: 4)
        XCTAssertEqual(rows, [[true, true, false, true], [false, true, true, true]])
        let mask = FrameMask(rows, like: x0, backend: backend)

        let xT = flow.interpolate(x0, noise: noise, timesteps: timesteps, backend: backend)
        assertAbsolutelyClose(backend.downloadDouble(xT), io.doubles("x_t"), 1e-6, "x_t")
        let masked = flow.interpolate(x0, noise: noise, timesteps: timesteps, frameMask: mask, backend: backend)
        assertAbsolutelyClose(backend.downloadDouble(masked), io.doubles("x_t_masked"), 1e-6, "x_t, frames masked")

        let result = flow.trainingLoss(modelOutput: io.tensor("output", on: backend), xStart: x0, noise: noise,
                                       frameMask: mask, backend: backend)
        assertRelativelyClose(result.perSample, io.doubles("loss"), 1e-5, "per-sample loss over generated frames")
        XCTAssertEqual(result.loss, io.doubles("loss").reduce(0, +) / 2, accuracy: 1e-5 * result.loss)
        XCTAssertEqual(result.gradient.shape, [2, 6, 4, 2, 2])
        assertAbsolutelyClose(backend.downloadDouble(result.gradient), io.doubles("gradient"), 1e-6,
                              "gradient (zero on conditioning frames and on the sigma half)")
    }

    func testEulerSamplerWithGuidanceAndFrameConditioningMatchesOpenSora() throws {
        let io = try Fixture("rectified_flow.safetensors")
        let flow = RectifiedFlow()
        let clean = io.tensor("sample_clean", on: backend), start = io.tensor("sample_start", on: backend)
        let mask = frameMask(io.doubles("sample_frame_mask"), frames: 3)
        // Open-Sora's shift sees 256 × 256 and 51 video frames, which its VAE makes 51 / 17 · 5 = 15 latent frames.
        let size = RectifiedFlow.InputSize(height: 256, width: 256, frames: 15)
        let conditioned = flow.sample(noise: start, steps: 6, size: size, model: guidedToyModel(scale: 4),
                                      condition: (clean, mask), backend: backend)
        assertAbsolutelyClose(backend.downloadDouble(conditioned), io.doubles("sample_conditioned"), 2e-5,
                              "6 Euler steps, guidance 4, frame 0 given")
        let plain = flow.sample(noise: start, steps: 6, size: size, model: guidedToyModel(scale: 4), backend: backend)
        assertAbsolutelyClose(backend.downloadDouble(plain), io.doubles("sample_plain"), 2e-5, "6 Euler steps")
        // The conditioning frame is exactly the given latents.
        let frame0 = backend.downloadDouble(backend.narrow(conditioned, axis: 2, start: 0, length: 1))
        XCTAssertEqual(frame0, backend.downloadDouble(backend.narrow(clean, axis: 2, start: 0, length: 1)))
    }

    func testTimestepSamplingStaysInRangeAndFollowsTheLogitNormal() {
        var random = RandomStream(seed: 11)
        let flow = RectifiedFlow(shift: nil)
        let t = flow.sampleTimesteps(batch: 4000, size: .init(height: 256, width: 256, frames: 1), random: &random)
        XCTAssertTrue(t.allSatisfy { $0 > 0 && $0 < 1000 })
        // sigmoid(N(0, 1)): median 500, and P(t/T < sigmoid(−1)) = Φ(−1) ≈ 0.159.
        let sorted = t.sorted()
        XCTAssertEqual(sorted[2000], 500, accuracy: 25)
        let below = Double(t.filter { $0 < 1000 / (1 + exp(1.0)) }.count) / 4000
        XCTAssertEqual(below, 0.159, accuracy: 0.02)
        var again = RandomStream(seed: 11)
        XCTAssertEqual(flow.sampleTimesteps(batch: 4000, size: .init(height: 256, width: 256, frames: 1), random: &again), t)
    }

    /// The fixture's toy model under guidance: conditional v = 0.6 · x − 0.1 · t/T, unconditional 0.3 · x − 0.1 · t/T,
    /// combined as u + s · (c − u), followed by a zero (learned-sigma) half the sampler must ignore.
    private func guidedToyModel(scale: Double) -> VelocityModel {
        { [backend] x, timesteps in
            let t = timesteps[0] / 1000
            let conditional = backend.affine(x, scale: 0.6, shift: -0.1 * t)
            let unconditional = backend.affine(x, scale: 0.3, shift: -0.1 * t)
            let guided = backend.add(unconditional, backend.affine(backend.sub(conditional, unconditional),
                                                                   scale: scale, shift: 0))
            return backend.concat([guided, backend.zeros(guided.shape, dtype: guided.dtype)], axis: 1)
        }
    }

    private func frameMask(_ values: [Double], frames: Int) -> [[Bool]] {
        stride(from: 0, to: values.count, by: frames).map { values[$0..<($0 + frames)].map { $0 != 0 } }
    }
}
