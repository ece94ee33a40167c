import Foundation
import KinemaTestSupport
import XCTest

/// A shorter `make demo`: the release `kinema` binary trains a small DiT on the synthetic shapes and
/// `eval-synthetic` must score far above chance (1/12 ≈ 8%). Runs the real CLI, so it also checks the commands'
/// wiring. `make test` builds the release binary first.
final class ShortTrainingTests: XCTestCase {
    func run(_ binary: URL, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.standardError
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertEqual(process.terminationStatus, 0, "kinema \(arguments.joined(separator: " ")) failed:\n\(text)")
        return text
    }

    func testShortDemoBeatsChanceByFar() throws {
        let root = Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent()
        let binary = root.appendingPathComponent(".build/release/kinema")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            XCTFail("\(binary.path) is missing: build it with `swift build -c release` (make test does)")
            return
        }
        let folder = Fixtures.temporaryDirectory("kinema-short-demo")
        _ = try run(binary, ["train", "--data", "synthetic", "--image-size", "16", "--steps", "400", "--batch-size", "32",
                             "--output", folder.path, "--log-every", "100"])
        let report = try run(binary, ["eval-synthetic", "--checkpoint", folder.appendingPathComponent("checkpoint.safetensors").path,
                                      "--per-class", "4", "--steps", "25", "--cfg-scale", "2"])
        let line = report.split(separator: "\n").first { $0.hasPrefix("eval-synthetic accuracy:") }
        let score = line.flatMap { Double($0.dropFirst("eval-synthetic accuracy:".count).split(separator: "%")[0]
            .trimmingCharacters(in: .whitespaces)) }
        XCTAssertNotNil(score, "no score in:\n\(report)")
        XCTAssertGreaterThan(score ?? 0, 40, "accuracy \(score ?? 0)% is not far above chance (8.3%)")
    }
}
