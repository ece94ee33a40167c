import Foundation
import XCTest
@testable import KinemaTensor

final class SafetensorsRoundTripTests: SafetensorsTestCase {
    /// Values every dtype holds exactly (integers included), so a round trip must give them back bit for bit.
    let values: [Float] = [0, 1, -2, 8, 3, -7]
    /// Fractions every float dtype holds exactly.
    let fractions: [Float] = [0.5, -0.25, 1.5, -0.0]

    func testEveryDTypeRoundTripsWithMetadata() throws {
        var entries: [(name: String, dtype: DType, shape: [Int], bytes: [UInt8])] = DType.allCases.map {
            (name: "weight.\($0)", dtype: $0, shape: [2, 3], bytes: encodeFloats(values, dtype: $0))
        }
        entries += DType.allCases.filter(\.isFloatingPoint).map {
            (name: "fraction.\($0)", dtype: $0, shape: [4], bytes: encodeFloats(fractions, dtype: $0))
        }
        entries.append((name: "scalar", dtype: .f32, shape: [], bytes: encodeFloats([0.1], dtype: .f32)))
        entries.append((name: "empty", dtype: .bf16, shape: [0, 4], bytes: []))
        let metadata = ["format": "pt", "step": "1200", "needs \"escaping\"": "tab\there\nnewline \\ ü"]
        let url = directory.appendingPathComponent("model.safetensors")
        try SafetensorsWriter.write(entries, metadata: metadata, to: url)

        let file = try SafetensorsFile(url: url)
        XCTAssertEqual(file.url, url)
        XCTAssertEqual(file.names, entries.map(\.name).sorted())
        XCTAssertEqual(file.metadata, metadata)
        for entry in entries {
            XCTAssertTrue(file.contains(entry.name))
            let info = try file.info(entry.name)
            XCTAssertEqual(info.dtype, entry.dtype, entry.name)
            XCTAssertEqual(info.shape, entry.shape, entry.name)
            XCTAssertEqual(try file.withBytes(entry.name) { Array($0) }, entry.bytes, entry.name)
        }
        for dtype in DType.allCases {
            XCTAssertEqual(try file.floats("weight.\(dtype)"), values, "\(dtype)")
            if dtype.isFloatingPoint {
                XCTAssertEqual(try file.floats("fraction.\(dtype)").map(\.bitPattern), fractions.map(\.bitPattern), "\(dtype)")
            }
        }
        XCTAssertEqual(try file.floats("scalar"), [0.1])
        XCTAssertEqual(try file.floats("empty"), [])
        XCTAssertFalse(file.contains("weight"))
    }

    func testLayoutIsAlignedGaplessAndPadded() throws {
        // Odd element counts of 2-byte tensors would misalign a following f32 tensor if names alone set the order.
        let entries: [(name: String, dtype: DType, shape: [Int], bytes: [UInt8])] = [
            (name: "a.half", dtype: .f16, shape: [3], bytes: encodeFloats([1, 2, 3], dtype: .f16)),
            (name: "b.float", dtype: .f32, shape: [1], bytes: encodeFloats([4], dtype: .f32)),
            (name: "c.double", dtype: .f64, shape: [1], bytes: encodeFloats([5], dtype: .f64)),
            (name: "d.brain", dtype: .bf16, shape: [1], bytes: encodeFloats([6], dtype: .bf16)),
        ]
        let url = directory.appendingPathComponent("layout.safetensors")
        try SafetensorsWriter.write(entries, to: url)

        let bytes = [UInt8](try Data(contentsOf: url))
        let headerLength = Int(bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
        XCTAssertEqual(headerLength % 8, 0, "header must be padded to a multiple of 8 bytes")
        let header = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as? [String: Any])
        XCTAssertNil(header["__metadata__"], "no metadata given, so none written")

        let dataLength = bytes.count - 8 - headerLength
        let ranges = try entries.map { entry -> (Int, Int, DType) in
            let fields = try XCTUnwrap(header[entry.name] as? [String: Any])
            let offsets = try XCTUnwrap(fields["data_offsets"] as? [Int])
            return (offsets[0], offsets[1], entry.dtype)
        }.sorted { $0.0 < $1.0 }
        var expectedBegin = 0
        for (begin, end, dtype) in ranges {
            XCTAssertEqual(begin, expectedBegin, "tensors must be contiguous")
            XCTAssertEqual(begin % dtype.byteSize, 0, "a \(dtype) tensor must start at a multiple of its element size")
            expectedBegin = end
        }
        XCTAssertEqual(expectedBegin, dataLength, "the data section must hold exactly the tensors")
        XCTAssertEqual(ranges.map(\.2), [.f64, .f32, .f16, .bf16], "largest elements first, then by name")
    }

    func testHeaderTextMatchesReferenceFormat() throws {
        let url = directory.appendingPathComponent("exact.safetensors")
        try SafetensorsWriter.write([(name: "x", dtype: .f32, shape: [2], bytes: encodeFloats([1, 2], dtype: .f32))],
                                    metadata: ["k": "v"], to: url)
        let bytes = [UInt8](try Data(contentsOf: url))
        let text = "{\"__metadata__\":{\"k\":\"v\"},\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"
        let padded = text + String(repeating: " ", count: (8 - text.utf8.count % 8) % 8)
        XCTAssertEqual(bytes.count, 8 + padded.utf8.count + 8)
        XCTAssertEqual(Array(bytes[0..<8]), littleEndianBytes([UInt64(padded.utf8.count)]))
        XCTAssertEqual(String(decoding: bytes[8..<(8 + padded.utf8.count)], as: UTF8.self), padded)
    }

    func testOverwriteReplacesAndLeavesNoTemporaryFile() throws {
        let url = directory.appendingPathComponent("ckpt.safetensors")
        try SafetensorsWriter.write([(name: "old", dtype: .f32, shape: [1], bytes: encodeFloats([1], dtype: .f32))], to: url)
        try SafetensorsWriter.write([(name: "new", dtype: .i32, shape: [2], bytes: encodeFloats([7, -9], dtype: .i32))], to: url)

        let file = try SafetensorsFile(url: url)
        XCTAssertEqual(file.names, ["new"])
        XCTAssertEqual(try file.floats("new"), [7, -9])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["ckpt.safetensors"])
    }

    func testWriteIntoMissingDirectoryThrowsAndLeavesNothing() throws {
        let url = directory.appendingPathComponent("no-such-dir/ckpt.safetensors")
        assertSafetensorsError({
            try SafetensorsWriter.write([(name: "w", dtype: .f32, shape: [1], bytes: encodeFloats([1], dtype: .f32))], to: url)
        }, { if case .io = $0 { return true } else { return false } }, mentions: ["ckpt.safetensors"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), [])
    }

    /// A file not made by our writer: unpadded header with whitespace, keys in no order, unaligned tensors.
    func testReadsHandBuiltFile() throws {
        let header = """
            { "mask" : {"shape": [2], "dtype": "I32", "data_offsets": [22, 30]},
              "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
              "__metadata__": {"source": "hand"},
              "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]} }
            """
        let data = littleEndianBytes([Float(1), 2, 3, 4].map(\.bitPattern))
            + littleEndianBytes([UInt16(0x3F80), 0xC000, 0x3E80])  // 1, -2, 0.25 in bf16
            + littleEndianBytes([Int32(7), -9])
        let url = try rawFile("hand.safetensors", header: header, data: data)

        let file = try SafetensorsFile(url: url)
        XCTAssertEqual(file.names, ["b", "mask", "w"])
        XCTAssertEqual(file.metadata, ["source": "hand"])
        XCTAssertEqual(try file.info("w").dtype, .f32)
        XCTAssertEqual(try file.info("w").shape, [2, 2])
        XCTAssertEqual(try file.info("b").dtype, .bf16)
        XCTAssertEqual(try file.floats("w"), [1, 2, 3, 4])
        XCTAssertEqual(try file.floats("b"), [1, -2, 0.25])
        XCTAssertEqual(try file.floats("mask"), [7, -9])  // starts at byte 22: not 4-byte aligned
        XCTAssertEqual(try file.withBytes("b") { Array($0) }, Array(data[16..<22]))
        XCTAssertNoThrow(try file.expectShape("w", [2, 2]))
    }

    func testDecodeAndEncodeFloats() {
        let halfway: Float = 1 + 1.0 / 256  // halfway between two bf16 values: rounds to even (1.0)
        XCTAssertEqual([UInt8]([0x80, 0x3F]).withUnsafeBytes { decodeFloats($0, dtype: .bf16) }, [1])
        XCTAssertEqual(encodeFloats([halfway], dtype: .bf16), [0x80, 0x3F])
        XCTAssertEqual(encodeFloats([-1], dtype: .f16), [0x00, 0xBC])
        XCTAssertEqual(encodeFloats([-3], dtype: .i64), littleEndianBytes([Int64(-3)]))
        let big: [Float] = [1e30, -1e-30, .infinity]
        XCTAssertEqual(encodeFloats(big, dtype: .f64).withUnsafeBytes { decodeFloats($0, dtype: .f64) }, big)
    }
}
