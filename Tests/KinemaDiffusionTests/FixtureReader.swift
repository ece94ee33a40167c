import Foundation
import XCTest

/// A minimal, test-only safetensors reader for the golden fixtures in Tests/Fixtures: an 8-byte little-endian
/// header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw little-endian payload.
struct Fixture {
    struct Entry {
        let dtype: String
        let shape: [Int]
        let range: Range<Int>
    }

    let name: String
    private let data: Data
    private let entries: [String: Entry]
    private let payloadStart: Int

    static var directory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures")
    }

    init(_ name: String) throws {
        self.name = name
        data = try Data(contentsOf: Self.directory.appendingPathComponent(name))
        let headerLength = Int(data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        payloadStart = 8 + headerLength
        let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<payloadStart)) as? [String: Any] ?? [:]
        var entries: [String: Entry] = [:]
        for (key, value) in header where key != "__metadata__" {
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int] else { continue }
            entries[key] = Entry(dtype: dtype, shape: shape, range: offsets[0]..<offsets[1])
        }
        self.entries = entries
    }

    func shape(_ key: String) -> [Int] { entries[key]?.shape ?? [] }

    private func raw(_ key: String) -> (Entry, Data) {
        guard let entry = entries[key] else { fatalError("\(name): no tensor '\(key)'") }
        return (entry, data.subdata(in: (payloadStart + entry.range.lowerBound)..<(payloadStart + entry.range.upperBound)))
    }

    /// An F64 or F32 tensor's values as doubles.
    func doubles(_ key: String) -> [Double] {
        let (entry, bytes) = raw(key)
        switch entry.dtype {
        case "F64": return bytes.withUnsafeBytes { p in (0..<bytes.count / 8).map { Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))) } }
        case "F32": return bytes.withUnsafeBytes { p in (0..<bytes.count / 4).map { Double(Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))) } }
        default: fatalError("\(name): '\(key)' is \(entry.dtype), not a float tensor")
        }
    }

    /// An I64 tensor's values.
    func ints(_ key: String) -> [Int] {
        let (entry, bytes) = raw(key)
        precondition(entry.dtype == "I64", "\(name): '\(key)' is \(entry.dtype), not I64")
        return bytes.withUnsafeBytes { p in (0..<bytes.count / 8).map { Int(Int64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) } }
    }
}
