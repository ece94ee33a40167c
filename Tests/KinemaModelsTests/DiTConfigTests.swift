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

    /// The paper's parameter counts (Table 1 of the DiT paper / its released models): DiT-S/2 33M, DiT-XL/2 675M.
    func testParameterCountOfSmallModelAndZeroInit() throws {
        let backend = CPUBackend()
        let model = try DiT(config: try DiTConfig.named("DiT-S/2"), backend: backend)
        XCTAssertEqual(Double(model.parameterCount) / 1e6, 33.0, accuracy: 0.5)
        // adaLN-zero: the final layer and every block's modulation start at zero, so the model outputs zero.
        for parameter in model.parameters where parameter.name.contains("adaLN") || parameter.name.hasPrefix("final_layer") {
            XCTAssertEqual(backend.sumOfSquares(parameter.value), 0, parameter.name)
        }
        XCTAssertGreaterThan(backend.sumOfSquares(model.parameters.first { $0.name == "blocks.0.attn.qkv.weight" }!.value), 0)
    }
}
