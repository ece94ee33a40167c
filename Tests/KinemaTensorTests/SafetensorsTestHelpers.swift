import Foundation
import XCTest
@testable import KinemaTensor

/// A fresh directory per test, removed afterwards, so tests never see each other's files.
class SafetensorsTestCase: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("kinema-safetensors-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// A file made byte by byte: the u64 header length, the header text as given (no padding), the data.
    func rawFile(_ name: String, header: String, data: [UInt8] = [], headerLength: UInt64? = nil) throws -> URL {
        let headerBytes = Array(header.utf8)
        var length = (headerLength ?? UInt64(headerBytes.count)).littleEndian
        let bytes = withUnsafeBytes(of: &length) { Array($0) } + headerBytes + data
        let url = directory.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    /// Asserts `body` throws a `SafetensorsError` that `matches` accepts and whose description contains every
    /// string of `mentions` (the file name, the tensor name, …). Returns the error for further checks.
    @discardableResult
    func assertSafetensorsError(_ body: () throws -> Void, _ matches: (SafetensorsError) -> Bool, mentions: [String],
                                file: StaticString = #filePath, line: UInt = #line) -> SafetensorsError? {
        do {
            try body()
            XCTFail("expected a SafetensorsError, nothing was thrown", file: file, line: line)
            return nil
        } catch let error as SafetensorsError {
            XCTAssertTrue(matches(error), "unexpected error case: \(error)", file: file, line: line)
            for text in mentions {
                XCTAssertTrue(error.description.contains(text), "message lacks '\(text)': \(error)", file: file, line: line)
            }
            return error
        } catch {
            XCTFail("expected a SafetensorsError, got \(error)", file: file, line: line)
            return nil
        }
    }
}

/// Little-endian bytes of a list of fixed-width values.
func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { value in withUnsafeBytes(of: value.littleEndian) { Array($0) } }
}
