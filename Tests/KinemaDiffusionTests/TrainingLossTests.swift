import KinemaCPU
import KinemaDiffusion
import KinemaTensor
import XCTest

final class TrainingLossTests: XCTestCase {
    let backend = CPUBackend()
    let diffusion = GaussianDiffusion()

    func testQSampleMatchesDiT() throws {
        let io = try Fixture("diffusion_io.safetensors")
        let t = io.ints("t")
        XCTAssertEqual(t, [0, 500])
        let xT = diffusion.qSample(io.tensor("x_start", on: backend), timesteps: t, noise: io.tensor("noise", on: backend),
                                   backend: backend)
        XCTAssertEqual(xT.shape, [2, 4, 8, 8])
        assertAbsolutelyClose(backend.downloadDouble(xT), io.doubles("x_t"), 1e-14, "x_t")

        let xT32 = diffusion.qSample(io.tensor("x_start", on: backend, dtype: .f32), timesteps: t,
                                     noise: io.tensor("noise", on: backend, dtype: .f32), backend: backend)
        assertAbsolutelyClose(backend.downloadDouble(xT32), io.doubles("f32_x_t"), 1e-6, "f32 x_t")
    }

    func testTrainingLossMatchesDiT() throws {
        let io = try Fixture("diffusion_io.safetensors")
        let t = io.ints("t")
        let result = diffusion.trainingLoss(
            modelOutput: io.tensor("model_output", on: backend), xStart: io.tensor("x_start", on: backend),
            xT: io.tensor("x_t", on: backend), noise: io.tensor("noise", on: backend), timesteps: t, backend: backend)
        let mse = io.doubles("mse"), vb = io.doubles("vb"), loss = io.doubles("loss")
        assertRelativelyClose(result.mse, mse, 1e-9, "mse")
        assertRelativelyClose(result.vb ?? [], vb, 1e-9, "vb (t = 0 decoder NLL, t = 500 KL)")
        assertRelativelyClose(result.perSample, loss, 1e-9, "per-sample loss")
        XCTAssertEqual(result.loss, loss.reduce(0, +) / 2, accuracy: 1e-9 * abs(result.loss))
        XCTAssertEqual(result.gradient.shape, [2, 8, 8, 8])
        XCTAssertEqual(result.gradient.dtype, .f64)

        // The ε half of the gradient is the MSE's alone: 2 (ε̂ − ε) / (B · C·H·W).
        let output = io.doubles("model_output"), noise = io.doubles("noise")
        let gradient = backend.downloadDouble(result.gradient)
        let size = 4 * 8 * 8
        var expected: [Double] = [], actual: [Double] = []
        for b in 0..<2 {
            for j in 0..<size {
                expected.append(2 * (output[b * 2 * size + j] - noise[b * size + j]) / Double(2 * size))
                actual.append(gradient[b * 2 * size + j])
            }
        }
        assertAbsolutelyClose(actual, expected, 1e-15, "d loss / d eps")
    }

    func testTrainingLossInFloat32() throws {
        // Stored in f32 the terms agree with the f64 reference to f32 rounding; at t = 0 the decoder NLL is
        // ill-conditioned (README-golden: 2.1e-3 between DiT's own f32 and f64), so loosely there.
        let io = try Fixture("diffusion_io.safetensors")
        let result = diffusion.trainingLoss(
            modelOutput: io.tensor("model_output", on: backend, dtype: .f32),
            xStart: io.tensor("x_start", on: backend, dtype: .f32), xT: io.tensor("x_t", on: backend, dtype: .f32),
            noise: io.tensor("noise", on: backend, dtype: .f32), timesteps: io.ints("t"), backend: backend)
        XCTAssertEqual(result.gradient.dtype, .f32)
        assertRelativelyClose(result.mse, io.doubles("mse"), 1e-5, "f32 mse")
        assertRelativelyClose(result.mse, io.doubles("f32_mse"), 1e-5, "f32 mse vs DiT f32")
        let vb = result.vb ?? [0, 0]
        XCTAssertEqual(vb[1], io.doubles("vb")[1], accuracy: 1e-4 * abs(io.doubles("vb")[1]))
        XCTAssertEqual(vb[0], io.doubles("vb")[0], accuracy: 1e-2 * abs(io.doubles("vb")[0]))
        XCTAssertEqual(vb[0], io.doubles("f32_vb")[0], accuracy: 1e-2 * abs(io.doubles("f32_vb")[0]))
    }

    /// The analytic gradient against central differences, in f64. DiT detaches ε̂ inside the bound, so the ε̂ half
    /// is checked against the MSE term alone and the v half against the bound (the only term that sees v), for a
    /// t = 0 sample (discretised decoder NLL) and a t = 500 sample (KL).
    func testGradientMatchesFiniteDifferences() throws {
        let io = try Fixture("diffusion_io.safetensors")
        let t = io.ints("t")
        let xStart = io.tensor("x_start", on: backend), xT = io.tensor("x_t", on: backend)
        let noise = io.tensor("noise", on: backend)
        let output = io.doubles("model_output")
        let shape = io.shape("model_output")
        func terms(_ values: [Double]) -> GaussianDiffusion.TrainingLoss {
            diffusion.trainingLoss(modelOutput: backend.upload(values, shape: shape, dtype: .f64), xStart: xStart,
                                   xT: xT, noise: noise, timesteps: t, backend: backend)
        }
        let gradient = backend.downloadDouble(terms(output).gradient)
        let size = 4 * 8 * 8
        for sample in 0..<2 {
            for j in [0, 7, 63, 64, 130, 200, 255] {
                for isVariance in [false, true] {
                    let p = sample * 2 * size + (isVariance ? size : 0) + j
                    // The bound is smooth and nearly flat in v at t = 500 (log β ≈ log σ²_posterior there), so a
                    // wider step keeps the difference above rounding noise.
                    let h = isVariance ? 1e-3 : 1e-6
                    var plus = output, minus = output
                    plus[p] += h
                    minus[p] -= h
                    let (up, down) = (terms(plus), terms(minus))
                    let numeric: Double
                    if isVariance {
                        numeric = ((up.vb ?? []).reduce(0, +) - (down.vb ?? []).reduce(0, +)) / 2 / (2 * h)
                        // v moves the total loss exactly as much.
                        XCTAssertEqual((up.loss - down.loss) / (2 * h), numeric, accuracy: 1e-9)
                    } else {
                        numeric = (up.mse.reduce(0, +) - down.mse.reduce(0, +)) / 2 / (2 * h)
                    }
                    XCTAssertEqual(gradient[p], numeric, accuracy: 1e-6 * abs(numeric) + 1e-12,
                                   "sample \(sample) (t = \(t[sample])) \(isVariance ? "v" : "eps")[\(j)]")
                }
            }
        }
        XCTAssertGreaterThan(abs(gradient[size]), 1e-4, "the t = 0 variance values receive a real gradient")
    }

    func testWithoutLearnedSigma() throws {
        let io = try Fixture("diffusion_io.safetensors")
        let plain = GaussianDiffusion(learnSigma: false)
        let epsilon = backend.chunk(io.tensor("model_output", on: backend), parts: 2, axis: 1)[0]
        let result = plain.trainingLoss(modelOutput: epsilon, xStart: io.tensor("x_start", on: backend),
                                        xT: io.tensor("x_t", on: backend), noise: io.tensor("noise", on: backend),
                                        timesteps: io.ints("t"), backend: backend)
        XCTAssertNil(result.vb)
        assertRelativelyClose(result.mse, io.doubles("mse"), 1e-9, "mse")
        XCTAssertEqual(result.perSample, result.mse)
        XCTAssertEqual(result.loss, io.doubles("mse").reduce(0, +) / 2, accuracy: 1e-12)
        XCTAssertEqual(result.gradient.shape, [2, 4, 8, 8])
    }

    /// Image-to-video with IDDPM: a conditioning frame stays clean in x_t, and the masked loss of a sample is the
    /// plain loss of its generated frames alone (mean over them, MSE and bound), with a zero gradient on the
    /// conditioning frame and, on the others, the gradient of that plain loss.
    func testFrameMaskedLossIsTheLossOfTheGeneratedFrames() {
        let shape = [2, 2, 4, 3, 3]  // [B, C, F, H, W]; sample 0 conditions on frame 0, sample 1 on none
        let xStart = backend.affine(backend.randomNormal(shape, dtype: .f64, seed: 1, offset: 0), scale: 0.5, shift: 0)
        let mask = FrameMask([[false, true, true, true], [true, true, true, true]], like: xStart, backend: backend)
        var random = RandomStream(seed: 3)
        let (timesteps, noise, xT) = diffusion.noisedBatch(xStart, frameMask: mask, random: &random, backend: backend)
        let frame0 = { (x: Tensor) in self.backend.downloadDouble(self.backend.narrow(x, axis: 2, start: 0, length: 1)) }
        XCTAssertEqual(Array(frame0(xT)[0..<9 * 2]), Array(frame0(xStart)[0..<9 * 2]), "sample 0's first frame is clean")
        XCTAssertNotEqual(Array(frame0(xT)[18...]), Array(frame0(xStart)[18...]), "sample 1's first frame is noised")
        let output = backend.affine(backend.randomNormal([2, 4, 4, 3, 3], dtype: .f64, seed: 2, offset: 0),
                                    scale: 0.5, shift: 0)
        let masked = diffusion.trainingLoss(modelOutput: output, xStart: xStart, xT: xT, noise: noise,
                                            timesteps: timesteps, frameMask: mask, backend: backend)
        let later = { (x: Tensor) in self.backend.narrow(x, axis: 2, start: 1, length: 3) }
        let generatedOnly = diffusion.trainingLoss(modelOutput: later(output), xStart: later(xStart), xT: later(xT),
                                                   noise: later(noise), timesteps: timesteps, backend: backend)
        let whole = diffusion.trainingLoss(modelOutput: output, xStart: xStart, xT: xT, noise: noise,
                                           timesteps: timesteps, backend: backend)
        XCTAssertEqual(masked.mse[0], generatedOnly.mse[0], accuracy: 1e-12 * abs(masked.mse[0]))
        XCTAssertEqual(masked.vb![0], generatedOnly.vb![0], accuracy: 1e-12 * abs(masked.vb![0]))
        XCTAssertEqual(masked.mse[1], whole.mse[1], accuracy: 1e-12 * abs(masked.mse[1]))
        XCTAssertEqual(masked.vb![1], whole.vb![1], accuracy: 1e-12 * abs(masked.vb![1]))
        // Gradients [B, 2C, F, H, W]: sample 0's conditioning frame gets none, its other frames the generated-only
        // loss's; sample 1 the whole loss's.
        let g = backend.downloadDouble(masked.gradient)
        let reference = backend.downloadDouble(generatedOnly.gradient), full = backend.downloadDouble(whole.gradient)
        for c in 0..<4 {
            for f in 0..<4 {
                for e in 0..<9 {
                    let value = g[((0 * 4 + c) * 4 + f) * 9 + e]
                    if f == 0 { XCTAssertEqual(value, 0, "sample 0 channel \(c) frame 0") } else {
                        XCTAssertEqual(value, reference[((0 * 4 + c) * 3 + f - 1) * 9 + e], accuracy: 1e-12 * abs(value))
                    }
                    let other = ((1 * 4 + c) * 4 + f) * 9 + e
                    XCTAssertEqual(g[other], full[other], accuracy: 1e-12 * abs(full[other]))
                }
            }
        }
    }

    func testTimestepSamplingAndNoisedBatch() {
        var random = RandomStream(seed: 7)
        let timesteps = diffusion.sampleTimesteps(batch: 4096, random: &random)
        XCTAssertTrue(timesteps.allSatisfy { (0..<1000).contains($0) })
        XCTAssertGreaterThan(Set(timesteps).count, 900)
        XCTAssertEqual(Double(timesteps.reduce(0, +)) / 4096, 499.5, accuracy: 15)
        var again = RandomStream(seed: 7)
        XCTAssertEqual(diffusion.sampleTimesteps(batch: 4096, random: &again), timesteps)

        let xStart = backend.randomNormal([3, 4, 8, 8], dtype: .f32, seed: 1, offset: 0)
        var r1 = RandomStream(seed: 11), r2 = RandomStream(seed: 11)
        let a = diffusion.noisedBatch(xStart, random: &r1, backend: backend)
        let b = diffusion.noisedBatch(xStart, random: &r2, backend: backend)
        XCTAssertEqual(a.timesteps, b.timesteps)
        XCTAssertEqual(backend.download(a.xT), backend.download(b.xT))
        XCTAssertEqual(r1, r2)
        let manual = diffusion.qSample(xStart, timesteps: a.timesteps, noise: a.noise, backend: backend)
        XCTAssertEqual(backend.download(manual), backend.download(a.xT))
        let next = diffusion.noisedBatch(xStart, random: &r1, backend: backend)
        XCTAssertNotEqual(backend.download(next.noise), backend.download(a.noise))
    }
}
