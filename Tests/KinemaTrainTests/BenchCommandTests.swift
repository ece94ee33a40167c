import Foundation
import XCTest

/// `kinema bench` through the CLI on the CPU: the Latte path reports a video step with its token count.
final class BenchCommandTests: XCTestCase {
    func testBenchTrainLatteReportsVideoTokens() throws {
        var errors = ""
        let output = try KinemaCLI.run(["bench", "train", "--model", "Latte-S/2", "--image-size", "32",
                                        "--num-frames", "3", "--caption-length", "6", "--depth", "1",
                                        "--hidden-size", "64", "--num-heads", "2", "--steps", "1", "--warmup", "0",
                                        "--json"], errors: &errors)
        let result = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]
        XCTAssertEqual(result?["model"] as? String, "Latte-S/2")
        XCTAssertEqual(result?["batchSize"] as? Int, 2, "Latte's default batch")
        XCTAssertEqual(result?["tokensPerSample"] as? Int, 3 * 2 * 2, "3 frames of a 2×2 patch grid")
        XCTAssertTrue(errors.contains("videos/s"), errors)
    }
}
