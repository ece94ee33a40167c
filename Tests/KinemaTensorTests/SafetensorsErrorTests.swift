import Foundation
import XCTest
@testable import KinemaTensor

/// Every way a file can be wrong gives its own error case, and a message naming the file and (where one is
/// involved) the tensor, so a user can tell which checkpoint to fix.
final class SafetensorsErrorTests: SafetensorsTestCase {
    private func isTruncated(_ error: SafetensorsError) -> Bool { if case .truncated = error { return true }; return false }
    private func isBadHeader(_ error: SafetensorsError) -> Bool { if case .badHeader = error { return true }; return false }

    func testFileShorterThanLengthField() throws {
        let url = directory.appendingPathComponent("tiny.safetensors")
        try Data([1, 2, 3, 4, 5]).write(to: url)
        let error = assertSafetensorsError({ _ = try SafetensorsFile(url: url) }, isTruncated, mentions: ["tiny.safetensors"])
        XCTAssertTrue(error?.description.contains("re-download or re-save") ?? false)
    }

    func testHeaderLengthBeyondFile() throws {
        let url = try rawFile("short-header.safetensors", header: "{}", headerLength: 1000)
        assertSafetensorsError({ _ = try SafetensorsFile(url: url) }, isTruncated,
                               mentions: ["short-header.safetensors", "1000"])
    }

    func testDataSectionCutShort() throws {
        let url = directory.appendingPathComponent("cut.safetensors")
        try SafetensorsWriter.write([(name: "blocks.0.weight", dtype: .f32, shape: [4],
                                      bytes: encodeFloats([1, 2, 3, 4], dtype: .f32))], to: url)
        let whole = try Data(contentsOf: url)
        try whole.dropLast(3).write(to: url)
        assertSafetensorsError({ _ = try SafetensorsFile(url: url) }, isTruncated,
                               mentions: ["cut.safetensors", "blocks.0.weight"])
    }

    func testHeaderNotJSON() throws {
        let url = try rawFile("garbage.safetensors", header: "{\"w\": {\"dtype\": \"F32\",")
        let error = assertSafetensorsError({ _ = try SafetensorsFile(url: url) }, isBadHeader,
                                           mentions: ["garbage.safetensors", "JSON"])
        XCTAssertTrue(error?.description.contains("re-download or re-save") ?? false)
    }

    func testHeaderNotAnObject() throws {
        let url = try rawFile("list.safetensors", header: "[1, 2]")
        assertSafetensorsError({ _ = try SafetensorsFile(url: url) }, isBadHeader, mentions: ["list.safetensors"])
    }

    func testUnknownDType() throws {
        let url = try rawFile("bytes.safetensors", header: "{\"attention_mask\": {\"dtype\": \"U8\", \"shape\": [2], "
                              + "\"data_offsets\": [0, 2]}}", data: [1, 0])
        let error = assertSafetensorsError({ _ = try SafetensorsFile(url: url) }, { _ in true },
                                           mentions: ["bytes.safetensors", "attention_mask", "U8"])
        XCTAssertEqual(error, .unknownDType(file: url.path, tensor: "attention_mask", dtype: "U8"))
    }

    func testOffsetsInconsistentWithShape() throws {
        let url = try rawFile("offsets.safetensors", header: "{\"proj.weight\": {\"dtype\": \"F32\", \"shape\": [2, 2], "
                              + "\"data_offsets\": [0, 12]}}", data: [UInt8](repeating: 0, count: 16))
        assertSafetensorsError({ _ = try SafetensorsFile(url: url) }, isBadHeader,
                               mentions: ["offsets.safetensors", "proj.weight", "[2, 2]"])
    }

    func testMissingOrMalformedFields() throws {
        let headers = [
            "no-shape": "{\"t\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}",
            "no-dtype": "{\"t\": {\"shape\": [1], \"data_offsets\": [0, 4]}}",
            "no-offsets": "{\"t\": {\"dtype\": \"F32\", \"shape\": [1]}}",
            "negative-dim": "{\"t\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}",
            "fraction-dim": "{\"t\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}",
            "reversed-offsets": "{\"t\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 0]}}",
            "entry-not-object": "{\"t\": 3}",
        ]
        for (name, header) in headers {
            let url = try rawFile("\(name).safetensors", header: header, data: [0, 0, 0, 0])
            assertSafetensorsError({ _ = try SafetensorsFile(url: url) }, isBadHeader, mentions: ["\(name).safetensors", "'t'"])
        }
    }

    func testMetadataValuesMustBeStrings() throws {
        let url = try rawFile("meta.safetensors", header: "{\"__metadata__\": {\"step\": 12}}")
        assertSafetensorsError({ _ = try SafetensorsFile(url: url) }, isBadHeader, mentions: ["meta.safetensors", "step"])
    }

    func testMissingTensor() throws {
        let url = directory.appendingPathComponent("small.safetensors")
        try SafetensorsWriter.write([(name: "w", dtype: .f32, shape: [1], bytes: encodeFloats([1], dtype: .f32))], to: url)
        let file = try SafetensorsFile(url: url)
        let expected = SafetensorsError.missingTensor(file: url.path, tensor: "final_layer.linear.bias")
        for access in [{ _ = try file.info("final_layer.linear.bias") },
                       { _ = try file.floats("final_layer.linear.bias") },
                       { _ = try file.withBytes("final_layer.linear.bias") { $0.count } }] {
            let error = assertSafetensorsError(access, { _ in true },
                                               mentions: ["small.safetensors", "final_layer.linear.bias"])
            XCTAssertEqual(error, expected)
        }
    }

    func testShapeMismatch() throws {
        let url = directory.appendingPathComponent("other-model.safetensors")
        try SafetensorsWriter.write([(name: "pos_embed", dtype: .f32, shape: [1, 2],
                                      bytes: encodeFloats([1, 2], dtype: .f32))], to: url)
        let file = try SafetensorsFile(url: url)
        let error = assertSafetensorsError({ try file.expectShape("pos_embed", [1, 4]) }, { _ in true },
                                           mentions: ["other-model.safetensors", "pos_embed", "[1, 4]", "[1, 2]"])
        XCTAssertEqual(error, .shapeMismatch(file: url.path, tensor: "pos_embed", expected: [1, 4], found: [1, 2]))
    }

    func testNonexistentFile() {
        let url = directory.appendingPathComponent("absent.safetensors")
        assertSafetensorsError({ _ = try SafetensorsFile(url: url) }, { if case .io = $0 { return true }; return false },
                               mentions: ["absent.safetensors"])
    }
}
