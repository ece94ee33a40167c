import KinemaCPU
import KinemaModels
import KinemaTensor
import XCTest

final class DiTConfigTests: XCTestCase {
    func testAllTwelvePaperConfigurations() throws {
        XCTAssertEqual(DiTConfig.paperNames.count, 12)
        let expected: [String: (Int, Int, Int)] = ["S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16),
                                                   "XL": (28, 1152, 16)]
        for name in DiTConfig.paperNames {
            let config = try DiTConfig.named(name)
            let size = String(name.dropFirst(4).prefix { $0 != "/" })
            XCTAssertEqual(config.depth, expected[size]!.0, name)
            XCTAssertEqual(config.hiddenSize, expected[size]!.1, name)
            XCTAssertEqual(config.numHeads, expected[size]!.2, name)
            XCTAssertEqual(config.patchSize, Int(name.split(separator: "/")[1])!, name)
            XCTAssertEqual(config.outChannels, 8, name)
            XCTAssertNoThrow(try config.validate(), name)
        }
        XCTAssertThrowsError(try DiTConfig.named("DiT-M/2")) { XCTAssertTrue("\($0)".contains("DiT-XL/2")) }
    }

    /// The DiT paper's Table 4: DiT-XL/2 at 256 px is 118.6 G multiply-adds, 237 GFLOP as DESIGN.md counts.
    func testCountedFLOPsOfDiTXL2() throws {
        let flops = try DiTConfig.named("DiT-XL/2").forwardFLOPs
        XCTAssertEqual(flops / 1e9, 237.2, accuracy: 0.5)
        XCTAssertEqual(try DiTConfig.named("DiT-S/8").forwardFLOPs / 2e9, 0.36, accuracy: 0.03)
    }

    /// The released DiT-XL/2 has 675,129,632 parameters counting its fixed 256 × 1152 positional table; the paper's
    /// sizes are S 33M, B 130M, L 458M, XL 675M.
    func testParameterCountsOfThePaper() throws {
        let xl = try DiTConfig.named("DiT-XL/2")
        XCTAssertEqual(xl.parameterCount + xl.tokenCount * xl.hiddenSize, 675_129_632)
        for (size, millions) in [("S", 33.0), ("B", 130.0), ("L", 458.0), ("XL", 675.0)] {
            for patch in [2, 4, 8] {
                XCTAssertEqual(Double(try DiTConfig.named("DiT-\(size)/\(patch)").parameterCount) / 1e6, millions,
                               accuracy: 1.0, "DiT-\(size)/\(patch)")
            }
        }
    }

    func testBuiltModelMatchesCountAndStartsAtZeroOutput() throws {
        let backend = CPUBackend()
        let config = DiTConfig(inputSize: 8, patchSize: 2, inChannels: 4, hiddenSize: 64, depth: 3, numHeads: 4,
                               numClasses: 10)
        let model = try DiT(config: config, backend: backend)
        XCTAssertEqual(model.parameterCount, config.parameterCount)
        // adaLN-zero: the final layer and every block's modulation start at zero, so the model outputs zero.
        for parameter in model.parameters where parameter.name.contains("adaLN") || parameter.name.hasPrefix("final_layer") {
            XCTAssertEqual(backend.sumOfSquares(parameter.value), 0, parameter.name)
        }
        XCTAssertGreaterThan(backend.sumOfSquares(model.parameters.first { $0.name == "blocks.0.attn.qkv.weight" }!.value), 0)
        let out = model(backend.randomNormal([2, 4, 8, 8], dtype: .f32, seed: 1, offset: 0),
                        timesteps: backend.upload([1.0, 500.0], shape: [2], dtype: .f32),
                        labels: backend.upload([0, 10] as [Int32], shape: [2]))
        XCTAssertEqual(backend.sumOfSquares(out), 0)
    }
}
