import KinemaCPU
import KinemaDiffusion
import KinemaTensor
import XCTest

final class SamplerTests: XCTestCase {
    let backend = CPUBackend()

    /// |a − b| / (|b| + 1): relative for large values, absolute near zero.
    private func assertClose(_ a: Tensor, _ b: [Double], _ tolerance: Double, _ message: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        assertRelativelyClose(backend.downloadDouble(a), b, tolerance, floor: 1, message, file: file, line: line)
    }

    // MARK: - DiT (IDDPM) fixtures, f64

    func testDDPMStepMatchesDiT() throws {
        let io = try Fixture("diffusion_io.safetensors")
        let sampler = DiffusionSampler(schedule: .dit())
        let indices = io.ints("ddpm_t")
        XCTAssertEqual(indices, [731, 0])
        let result = sampler.ddpmStep(x: io.tensor("ddpm_x", on: backend), indices: indices,
                                      modelOutput: io.tensor("ddpm_model_output", on: backend),
                                      noise: io.tensor("ddpm_noise", on: backend), backend: backend)
        assertClose(result.sample, io.doubles("ddpm_out"), 1e-12, "DDPM sample (t = 731 with noise, t = 0 without)")
        assertClose(result.predictedXStart, io.doubles("ddpm_pred_xstart"), 1e-12, "DDPM x0 prediction")
    }

    func testDDIMStepMatchesDiT() throws {
        let io = try Fixture("diffusion_io.safetensors")
        let sampler = DiffusionSampler(schedule: .dit())
        let indices = io.ints("ddim_t")
        XCTAssertEqual(indices, [600, 3])
        let x = io.tensor("ddim_x", on: backend), output = io.tensor("ddim_model_output", on: backend)
        let noise = io.tensor("ddim_noise", on: backend)
        let eta0 = sampler.ddimStep(x: x, indices: indices, modelOutput: output, eta: 0, noise: nil, backend: backend)
        assertClose(eta0.sample, io.doubles("ddim_out_eta0"), 1e-12, "DDIM eta 0")
        assertClose(eta0.predictedXStart, io.doubles("ddim_pred_xstart"), 1e-12, "DDIM x0 prediction")
        let eta1 = sampler.ddimStep(x: x, indices: indices, modelOutput: output, eta: 1, noise: noise, backend: backend)
        assertClose(eta1.sample, io.doubles("ddim_out_eta1"), 1e-12, "DDIM eta 1")
        // Noise passed at η = 0 changes nothing.
        let eta0Noise = sampler.ddimStep(x: x, indices: indices, modelOutput: output, eta: 0, noise: noise, backend: backend)
        XCTAssertEqual(backend.downloadDouble(eta0Noise.sample), backend.downloadDouble(eta0.sample))
    }

    func testRespacedStepsMatchDiT() throws {
        let io = try Fixture("diffusion_io.safetensors")
        let sampler = try DiffusionSampler(method: .ddim(eta: 0), steps: 25)
        let indices = io.ints("ddim25_index")
        XCTAssertEqual(sampler.originalTimesteps(indices), io.ints("ddim25_mapped_t"))
        let x = io.tensor("ddim25_x", on: backend), noise = io.tensor("ddim25_noise", on: backend)
        let output = io.tensor("ddim25_model_output", on: backend)
        // Through the denoiser path: the model must be called with the ORIGINAL timesteps.
        var calls: [[Int]] = []
        let denoiser: Denoiser = { input, timesteps in
            calls.append(timesteps)
            XCTAssertEqual(input.shape, [2, 4, 8, 8])
            return output
        }
        let ddpm = sampler.step(.ddpm, x: x, indices: indices, denoiser: denoiser, noise: noise, backend: backend)
        assertClose(ddpm.sample, io.doubles("ddim25_ddpm_out"), 1e-12, "respaced DDPM step")
        let ddim0 = sampler.step(.ddim(eta: 0), x: x, indices: indices, denoiser: denoiser, noise: noise, backend: backend)
        assertClose(ddim0.sample, io.doubles("ddim25_ddim_out_eta0"), 1e-12, "respaced DDIM eta 0")
        let ddim1 = sampler.step(.ddim(eta: 1), x: x, indices: indices, denoiser: denoiser, noise: noise, backend: backend)
        assertClose(ddim1.sample, io.doubles("ddim25_ddim_out_eta1"), 1e-12, "respaced DDIM eta 1")
        XCTAssertEqual(calls, [[480, 40], [480, 40], [480, 40]])
    }

    // MARK: - diffusers schedulers, f32 reference

    func testDDPMStepMatchesDiffusers() throws {
        let golden = try Fixture("diffusers_schedulers.safetensors")
        let sampler = DiffusionSampler(schedule: .dit())
        // diffusers builds ᾱ in f32; ours is f64.
        assertRelativelyClose(sampler.schedule.alphasCumprod, golden.doubles("alphas_cumprod"), 1e-4, "alphas_cumprod")
        let t = golden.ints("ddpm_timestep")
        XCTAssertEqual(t, [500])
        let result = sampler.ddpmStep(x: golden.tensor("ddpm_sample", on: backend), indices: t,
                                      modelOutput: golden.tensor("ddpm_model_output", on: backend),
                                      noise: golden.tensor("ddpm_noise", on: backend), backend: backend)
        assertClose(result.sample, golden.doubles("ddpm_prev_sample"), 1e-4, "diffusers DDPMScheduler learned_range step")
    }

    func testDDIMStepMatchesDiffusers() throws {
        let golden = try Fixture("diffusers_schedulers.safetensors")
        // diffusers' 50-step "leading" DDIM walks t = 980, 960, …, 0: IDDPM's "ddim50" respacing. Its step from t
        // goes to t − 1000/50 with ᾱ_prev = ᾱ[t − 20], which is the respaced schedule's alphasCumprodPrev.
        let sampler = try DiffusionSampler(method: .ddim(eta: 0), steps: 50, learnSigma: false)
        XCTAssertEqual(Array(sampler.schedule.timestepMap.reversed()), golden.ints("ddim_timesteps"))
        let t = golden.ints("ddim_timestep")[0], prev = golden.ints("ddim_prev_timestep")[0]
        guard let index = sampler.schedule.timestepMap.firstIndex(of: t) else { return XCTFail("timestep \(t) not kept") }
        XCTAssertEqual(sampler.schedule.timestepMap[index - 1], prev)
        let x = golden.tensor("ddim_sample", on: backend), output = golden.tensor("ddim_model_output", on: backend)
        var seen: [Int] = []
        let denoiser: Denoiser = { _, timesteps in seen = timesteps; return output }
        let eta0 = sampler.step(.ddim(eta: 0), x: x, indices: [index], denoiser: denoiser, noise: nil, backend: backend)
        XCTAssertEqual(seen, [t])
        assertClose(eta0.sample, golden.doubles("ddim_prev_sample"), 1e-4, "diffusers DDIMScheduler eta 0")
        let eta1 = sampler.step(.ddim(eta: 1), x: x, indices: [index], denoiser: denoiser,
                                noise: golden.tensor("ddim_eta1_noise", on: backend), backend: backend)
        assertClose(eta1.sample, golden.doubles("ddim_eta1_prev_sample"), 1e-4, "diffusers DDIMScheduler eta 1")
    }

    // MARK: - Host re-derivations of the branches the fixtures do not cover

    func testClippedDDIMRederivesEpsilonFromClippedXStart() {
        let schedule = NoiseSchedule.dit()
        let sampler = DiffusionSampler(schedule: schedule, learnSigma: true, clipDenoised: true)
        let shape = [2, 2, 3, 3], count = 36
        let xValues = (0..<count).map { sin(Double($0)) * 2 }
        let epsValues = (0..<count).map { cos(Double($0) * 0.7) }
        let vValues = (0..<count).map { tanh(Double($0) * 0.1 - 1) }
        var outputValues: [Double] = []
        for b in 0..<2 {
            outputValues += epsValues[(b * 18)..<(b * 18 + 18)]
            outputValues += vValues[(b * 18)..<(b * 18 + 18)]
        }
        let x = backend.upload(xValues, shape: shape, dtype: .f64)
        let output = backend.upload(outputValues, shape: [2, 4, 3, 3], dtype: .f64)
        let indices = [20, 900]
        let result = sampler.ddimStep(x: x, indices: indices, modelOutput: output, eta: 0, noise: nil, backend: backend)
        let sample = backend.downloadDouble(result.sample), x0 = backend.downloadDouble(result.predictedXStart)
        var expectedX0: [Double] = [], expected: [Double] = []
        for i in 0..<count {
            let t = indices[i / 18], a = schedule.alphasCumprod[t], ap = schedule.alphasCumprodPrev[t]
            let raw = (1 / a).squareRoot() * xValues[i] - (1 / a - 1).squareRoot() * epsValues[i]
            let clipped = min(max(raw, -1), 1)
            let eps = ((1 / a).squareRoot() * xValues[i] - clipped) / (1 / a - 1).squareRoot()
            expectedX0.append(clipped)
            expected.append(ap.squareRoot() * clipped + (1 - ap).squareRoot() * eps)
        }
        XCTAssertTrue(expectedX0.contains(1) || expectedX0.contains(-1), "the test must exercise the clip")
        assertAbsolutelyClose(x0, expectedX0, 1e-12, "clipped x0")
        assertAbsolutelyClose(sample, expected, 1e-12, "DDIM with clipped x0")
    }

    func testFixedVarianceDDPMStep() {
        // learnSigma = false: DiT's FIXED_LARGE variance, β_t (σ²_posterior[1] at t = 0, where no noise is added).
        let schedule = NoiseSchedule.dit()
        let sampler = DiffusionSampler(schedule: schedule, learnSigma: false)
        let shape = [2, 1, 2, 2]
        let xValues = [0.3, -0.2, 1.1, 0.5, -0.7, 0.1, 0.0, 0.9]
        let epsValues = [0.1, 0.2, -0.3, 0.4, 0.5, -0.6, 0.7, 0.8]
        let noiseValues = [1.0, -1.0, 0.5, 0.25, 2.0, 0.0, -0.5, 1.5]
        let indices = [400, 0]
        let result = sampler.ddpmStep(x: backend.upload(xValues, shape: shape, dtype: .f64), indices: indices,
                                      modelOutput: backend.upload(epsValues, shape: shape, dtype: .f64),
                                      noise: backend.upload(noiseValues, shape: shape, dtype: .f64), backend: backend)
        var expected: [Double] = []
        for i in 0..<8 {
            let t = indices[i / 4]
            let x0 = schedule.sqrtRecipAlphasCumprod[t] * xValues[i] - schedule.sqrtRecipM1AlphasCumprod[t] * epsValues[i]
            let mean = schedule.posteriorMeanCoef1[t] * x0 + schedule.posteriorMeanCoef2[t] * xValues[i]
            expected.append(mean + (t == 0 ? 0 : schedule.betas[t].squareRoot() * noiseValues[i]))
        }
        assertAbsolutelyClose(backend.downloadDouble(result.sample), expected, 1e-12, "fixed-large DDPM step")
    }

    // MARK: - Loops

    final class CallRecorder { var calls: [[Int]] = [] }

    /// A deterministic stand-in for a model: ε̂ = 0.5·x + 0.01·t/1000, v = tanh(x).
    private func toyDenoiser(on backend: CPUBackend? = nil, recorder: CallRecorder? = nil) -> Denoiser {
        let backend = backend ?? self.backend
        return { x, timesteps in
            recorder?.calls.append(timesteps)
            let shift = timesteps.map { 0.01 * Double($0) / 1000 }
            let ones = backend.empty(x.shape, dtype: x.dtype)
            backend.fill(ones, with: 1)
            let epsilon = backend.rowwiseAxpby(Array(repeating: 0.5, count: x.shape[0]), x, shift, ones)
            return backend.concat([epsilon, backend.unary(.tanh, x)], axis: 1)
        }
    }

    func testSamplingIsDeterministicPerSeed() throws {
        let sampler = try DiffusionSampler(method: .ddim(eta: 0), steps: 10)
        let shape = [2, 4, 8, 8]
        for eta in [0.0, 1.0] {
            var r1 = RandomStream(seed: 42), r2 = RandomStream(seed: 42), r3 = RandomStream(seed: 43)
            let a = sampler.ddimLoop(shape: shape, eta: eta, denoiser: toyDenoiser(), random: &r1, backend: backend)
            let b = sampler.ddimLoop(shape: shape, eta: eta, denoiser: toyDenoiser(), random: &r2, backend: backend)
            let c = sampler.ddimLoop(shape: shape, eta: eta, denoiser: toyDenoiser(), random: &r3, backend: backend)
            XCTAssertEqual(backend.download(a), backend.download(b), "same seed, same DDIM(η=\(eta)) sample")
            XCTAssertNotEqual(backend.download(a), backend.download(c), "another seed, another sample")
            XCTAssertEqual(r1, r2)
            XCTAssertTrue(backend.download(a).allSatisfy { $0.isFinite })
        }
        // The thread count does not change the sample (Philox noise, per-element kernels).
        var r4 = RandomStream(seed: 42), r5 = RandomStream(seed: 42)
        let one = CPUBackend(threads: 1)
        let a = sampler.ddimLoop(shape: shape, eta: 1, denoiser: toyDenoiser(), random: &r4, backend: backend)
        let b = try DiffusionSampler(method: .ddim(eta: 1), steps: 10)
            .ddimLoop(shape: shape, eta: 1, denoiser: toyDenoiser(on: one), random: &r5, backend: one)
        XCTAssertEqual(backend.download(a), one.download(b))
    }

    func testLoopsWalkTheRespacedScheduleWithOriginalTimesteps() throws {
        let sampler = try DiffusionSampler(method: .ddpm, steps: 25)
        let recorder = CallRecorder()
        var progress: [(Int, Int)] = []
        var random = RandomStream(seed: 5)
        let sample = sampler.ddpmLoop(shape: [2, 4, 4, 4], denoiser: toyDenoiser(recorder: recorder), random: &random,
                                      backend: backend, progress: { progress.append(($0, $1)) })
        let calls = recorder.calls
        XCTAssertEqual(sample.shape, [2, 4, 4, 4])
        XCTAssertEqual(calls.map { $0[0] }, Array(sampler.schedule.timestepMap.reversed()))
        XCTAssertEqual(calls.first, [999, 999])
        XCTAssertEqual(calls.last, [0, 0])
        XCTAssertEqual(progress.map(\.0), Array(1...25))
        XCTAssertTrue(progress.allSatisfy { $0.1 == 25 })
        // x_T plus one noise draw per step but the last, each of 2·4·4·4 = 128 normals (32 counters).
        XCTAssertEqual(random.position, UInt64(25 * 32))

        // A given x_T replaces the first draw; DDIM η = 0 then draws nothing.
        let start = backend.randomNormal([2, 4, 4, 4], dtype: .f32, seed: 9, offset: 0)
        var quiet = RandomStream(seed: 5)
        _ = try DiffusionSampler(method: .ddim(eta: 0), steps: 5)
            .ddimLoop(shape: [2, 4, 4, 4], denoiser: toyDenoiser(), random: &quiet, initialNoise: start, backend: backend)
        XCTAssertEqual(quiet.position, 0)
    }
}
