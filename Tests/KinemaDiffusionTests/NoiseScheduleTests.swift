import KinemaDiffusion
import XCTest

final class NoiseScheduleTests: XCTestCase {
    func testScheduleMatchesDiT() throws {
        let golden = try Fixture("schedule.safetensors")
        let schedule = NoiseSchedule.dit()
        XCTAssertEqual(schedule.count, 1000)
        XCTAssertEqual(schedule.timestepMap, Array(0..<1000))
        assertRelativelyClose(schedule.betas, golden.doubles("betas"), 1e-12, "betas")
        assertRelativelyClose(schedule.alphasCumprod, golden.doubles("alphas_cumprod"), 1e-12, "alphas_cumprod")
        assertRelativelyClose(schedule.alphasCumprodPrev, golden.doubles("alphas_cumprod_prev"), 1e-12, "alphas_cumprod_prev")
        assertRelativelyClose(schedule.posteriorVariance, golden.doubles("posterior_variance"), 1e-12, "posterior_variance")
        assertRelativelyClose(schedule.posteriorLogVarianceClipped, golden.doubles("posterior_log_variance_clipped"),
                              1e-12, "posterior_log_variance_clipped")
        assertRelativelyClose(schedule.posteriorMeanCoef1, golden.doubles("posterior_mean_coef1"), 1e-12, "posterior_mean_coef1")
        assertRelativelyClose(schedule.posteriorMeanCoef2, golden.doubles("posterior_mean_coef2"), 1e-12, "posterior_mean_coef2")
        XCTAssertEqual(schedule.posteriorVariance[0], 0)
        XCTAssertEqual(schedule.posteriorLogVarianceClipped[0], schedule.posteriorLogVarianceClipped[1])

        // The plain linspace β's agree with the recomputed ones up to rounding (1.7e-16 absolute).
        let linear = NoiseSchedule.linear()
        assertAbsolutelyClose(linear.betas, golden.doubles("betas"), 1e-15, "linspace betas")
        assertRelativelyClose(linear.alphasCumprod, golden.doubles("alphas_cumprod"), 1e-12, "linspace alphas_cumprod")
        XCTAssertEqual(linear.betas.first, 0.0001)
        XCTAssertEqual(linear.betas.last, 0.02)
    }

    func testDerivedArraysAreConsistent() {
        let s = NoiseSchedule.dit()
        for t in [0, 1, 10, 500, 999] {
            XCTAssertEqual(s.sqrtAlphasCumprod[t] * s.sqrtAlphasCumprod[t], s.alphasCumprod[t], accuracy: 1e-15)
            XCTAssertEqual(s.sqrtOneMinusAlphasCumprod[t], (1 - s.alphasCumprod[t]).squareRoot(), accuracy: 1e-15)
            XCTAssertEqual(exp(s.logOneMinusAlphasCumprod[t]), 1 - s.alphasCumprod[t], accuracy: 1e-15)
            XCTAssertEqual(s.sqrtRecipAlphasCumprod[t] * s.sqrtAlphasCumprod[t], 1, accuracy: 1e-13)
            XCTAssertEqual(s.sqrtRecipM1AlphasCumprod[t], (1 / s.alphasCumprod[t] - 1).squareRoot(), accuracy: 1e-12)
            XCTAssertEqual(s.logBetas[t], log(s.betas[t]), accuracy: 1e-15)
        }
        XCTAssertEqual(s.alphasCumprodNext[998], s.alphasCumprod[999])
        XCTAssertEqual(s.alphasCumprodNext[999], 0)
        // The 1000/T scale keeps the schedule's shape for other step counts.
        let short = NoiseSchedule.linear(steps: 100)
        XCTAssertEqual(short.betas.first!, 0.001, accuracy: 1e-18)
        XCTAssertEqual(short.betas.last!, 0.2, accuracy: 1e-16)
    }

    func testRespacingMatchesDiT() throws {
        let golden = try Fixture("schedule.safetensors")
        let base = NoiseSchedule.dit()
        let expected25 = [0, 42, 83, 125, 166, 208, 250, 291, 333, 375, 416, 458, 500, 541, 583, 624, 666, 708, 749, 791,
                          832, 874, 916, 957, 999]
        XCTAssertEqual(golden.ints("respaced_timestep_map"), expected25)
        XCTAssertEqual(try Respacing.spaceTimesteps(1000, "25"), expected25)
        let r25 = try base.respaced("25")
        XCTAssertEqual(r25.timestepMap, golden.ints("respaced_timestep_map"))
        XCTAssertEqual(r25.originalStepCount, 1000)
        assertRelativelyClose(r25.betas, golden.doubles("respaced_betas"), 1e-12, "respaced betas")

        let d25 = try base.respaced("ddim25")
        XCTAssertEqual(d25.timestepMap, golden.ints("ddim_timestep_map"))
        XCTAssertEqual(d25.timestepMap, Array(stride(from: 0, to: 1000, by: 40)))
        assertRelativelyClose(d25.betas, golden.doubles("ddim_betas"), 1e-12, "ddim betas")
        // The kept ᾱ's are the original ones.
        for (index, t) in d25.timestepMap.enumerated() {
            XCTAssertEqual(d25.alphasCumprod[index], base.alphasCumprod[t], accuracy: 1e-15)
        }
        // Respacing the plain linear schedule gives the same betas to rounding.
        assertRelativelyClose(try NoiseSchedule.linear().respaced("25").betas, golden.doubles("respaced_betas"), 1e-12)
    }

    func testSpaceTimestepsSections() throws {
        // IDDPM's docstring example: 300 steps in sections of 100 strided to 10, 15 and 20 steps.
        XCTAssertEqual(try Respacing.spaceTimesteps(300, "10,15,20"),
                       [0, 11, 22, 33, 44, 55, 66, 77, 88, 99,
                        100, 107, 114, 121, 128, 135, 142, 149, 157, 164, 171, 178, 185, 192, 199,
                        200, 205, 210, 216, 221, 226, 231, 236, 242, 247, 252, 257, 263, 268, 273, 278, 283, 289, 294, 299])
        // Uneven sections: 1000 = 334 + 333 + 333.
        XCTAssertEqual(try Respacing.spaceTimesteps(1000, "10,15,20"),
                       [0, 37, 74, 111, 148, 185, 222, 259, 296, 333,
                        334, 358, 381, 405, 429, 453, 476, 500, 524, 547, 571, 595, 619, 642, 666,
                        667, 684, 702, 719, 737, 754, 772, 789, 807, 824, 842, 859, 877, 894, 912, 929, 947, 964, 982, 999])
        // Python's round is half-to-even: 4.5 → 4.
        XCTAssertEqual(try Respacing.spaceTimesteps(10, "5"), [0, 2, 4, 7, 9])
        XCTAssertEqual(try Respacing.spaceTimesteps(10, "3,1"), [0, 2, 4, 5])
        XCTAssertEqual(try Respacing.spaceTimesteps(1000, "1"), [0])
        let s250 = try Respacing.spaceTimesteps(1000, "250")
        XCTAssertEqual(s250.count, 250)
        XCTAssertEqual(Array(s250.prefix(4)), [0, 4, 8, 12])
        XCTAssertEqual(s250.last, 999)
        XCTAssertEqual(try Respacing.spaceTimesteps(1000, ""), Array(0..<1000))
        XCTAssertEqual(try Respacing.spaceTimesteps(1000, "1000"), Array(0..<1000))
        XCTAssertEqual(try Respacing.spaceTimesteps(1000, "ddim50"), Array(stride(from: 0, to: 1000, by: 20)))
        XCTAssertThrowsError(try Respacing.spaceTimesteps(100, "ddim30"))
        XCTAssertThrowsError(try Respacing.spaceTimesteps(100, "60,60"))
        XCTAssertThrowsError(try Respacing.spaceTimesteps(100, "ten"))
        XCTAssertThrowsError(try Respacing.spaceTimesteps(100, "ddim"))
    }

    func testSamplerPresets() throws {
        let ddpm = try DiffusionSampler(method: .ddpm, steps: 250)
        XCTAssertEqual(ddpm.schedule.count, 250)
        XCTAssertEqual(ddpm.schedule.timestepMap, try Respacing.spaceTimesteps(1000, "250"))
        let ddim = try DiffusionSampler(method: .ddim(eta: 0), steps: 50)
        XCTAssertEqual(ddim.schedule.timestepMap, Array(stride(from: 0, to: 1000, by: 20)))
        XCTAssertEqual(ddim.originalTimesteps([49, 0]), [980, 0])
    }
}
