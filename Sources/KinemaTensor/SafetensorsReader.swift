import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A safetensors file mapped read-only into memory. The header is parsed and every tensor's entry validated
/// when the file opens, so a file that opens can be read whole; tensor bytes are only touched (paged in by the
/// kernel) when asked for.
///
/// Immutable after `init`, so it can be read from several threads at once.
public final class SafetensorsFile: @unchecked Sendable {
    public let url: URL
    /// Tensor names, sorted.
    public let names: [String]
    /// The header's `"__metadata__"` object (empty when the file has none).
    public let metadata: [String: String]

    struct Entry {
        var dtype: DType
        var shape: [Int]
        /// Byte range inside the data section.
        var begin: Int
        var end: Int
    }

    private let entries: [String: Entry]
    private let mapping: UnsafeRawPointer
    private let mappedLength: Int
    /// Offset of the data section from the start of the file (8 + header length).
    private let dataStart: Int

    public init(url: URL) throws {
        self.url = url
        let path = url.path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw SafetensorsError.io(file: path, reason: "open failed: \(errnoText())") }
        defer { close(fd) }  // the mapping stays valid after the descriptor closes

        var status = stat()
        guard fstat(fd, &status) == 0 else { throw SafetensorsError.io(file: path, reason: "stat failed: \(errnoText())") }
        guard (status.st_mode & S_IFMT) == S_IFREG else {
            throw SafetensorsError.io(file: path, reason: "not a regular file")
        }
        let length = Int(status.st_size)
        guard length >= 8 else {
            throw SafetensorsError.truncated(file: path, reason: "it has \(length) bytes, fewer than the 8 of the header length")
        }
        guard let address = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0),
              address != UnsafeMutableRawPointer(bitPattern: -1) else {  // MAP_FAILED
            throw SafetensorsError.io(file: path, reason: "mmap failed: \(errnoText())")
        }
        // From here on, a thrown error must unmap: deinit does not run for an object whose init failed.
        do {
            let whole = UnsafeRawBufferPointer(start: address, count: length)
            let headerLength = UInt64(littleEndian: whole.loadUnaligned(as: UInt64.self))
            guard headerLength <= UInt64(length - 8) else {
                throw SafetensorsError.truncated(
                    file: path, reason: "the header claims \(headerLength) bytes but only \(length - 8) follow the length field")
            }
            let start = 8 + Int(headerLength)
            let parsed = try Self.parseHeader(UnsafeRawBufferPointer(rebasing: whole[8..<start]), file: path,
                                              dataLength: length - start)
            entries = parsed.entries
            metadata = parsed.metadata
            names = parsed.entries.keys.sorted()
            dataStart = start
        } catch {
            munmap(address, length)
            throw error
        }
        mapping = UnsafeRawPointer(address)
        mappedLength = length
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: mapping), mappedLength) }

    public func contains(_ name: String) -> Bool { entries[name] != nil }

    public func info(_ name: String) throws -> (dtype: DType, shape: [Int]) {
        let entry = try self.entry(name)
        return (entry.dtype, entry.shape)
    }

    /// Throws `shapeMismatch` unless tensor `name` has shape `expected` (a loader's check that a checkpoint fits
    /// the model it is loaded into).
    public func expectShape(_ name: String, _ expected: [Int]) throws {
        let found = try entry(name).shape
        guard found == expected else {
            throw SafetensorsError.shapeMismatch(file: url.path, tensor: name, expected: expected, found: found)
        }
    }

    /// The tensor's raw little-endian bytes, pointing into the mapping; valid only inside `body`. The pointer is
    /// not necessarily aligned to the element size (files from other writers need not align tensors).
    public func withBytes<R>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let entry = try self.entry(name)
        let start = mapping + dataStart + entry.begin
        return try body(UnsafeRawBufferPointer(start: start, count: entry.end - entry.begin))
    }

    /// The tensor on `backend`, in the file's dtype or cast to `dtype`.
    public func tensor(_ name: String, on backend: some MemoryOps, as dtype: DType? = nil) throws -> Tensor {
        let entry = try self.entry(name)
        let stored = try withBytes(name) { backend.upload(bytes: $0, shape: entry.shape, dtype: entry.dtype) }
        guard let dtype, dtype != entry.dtype else { return stored }
        return backend.cast(stored, to: dtype)
    }

    /// The tensor's values as host floats, whatever its dtype (see `decodeFloats`).
    public func floats(_ name: String) throws -> [Float] {
        let dtype = try entry(name).dtype
        return try withBytes(name) { decodeFloats($0, dtype: dtype) }
    }

    private func entry(_ name: String) throws -> Entry {
        guard let entry = entries[name] else { throw SafetensorsError.missingTensor(file: url.path, tensor: name) }
        return entry
    }
}

// MARK: - Header parsing

extension SafetensorsFile {
    static func parseHeader(_ header: UnsafeRawBufferPointer, file: String,
                            dataLength: Int) throws -> (entries: [String: Entry], metadata: [String: String]) {
        func bad(_ reason: String) -> SafetensorsError { .badHeader(file: file, reason: reason) }

        let json: Any
        do {
            let data = header.baseAddress.map { Data(bytes: $0, count: header.count) } ?? Data()
            json = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw bad("the \(header.count)-byte header is not valid JSON")
        }
        guard let object = json as? [String: Any] else { throw bad("the header is not a JSON object") }

        var metadata: [String: String] = [:]
        if let raw = object["__metadata__"] {
            guard let pairs = raw as? [String: Any] else { throw bad("\"__metadata__\" is not an object") }
            for (key, value) in pairs {
                guard let text = value as? String else { throw bad("\"__metadata__\" value of '\(key)' is not a string") }
                metadata[key] = text
            }
        }

        var entries: [String: Entry] = [:]
        // Sorted so that, of several bad tensors, the same one is always reported.
        for name in object.keys.sorted() where name != "__metadata__" {
            guard let fields = object[name] as? [String: Any] else { throw bad("the entry of tensor '\(name)' is not an object") }
            guard let dtypeName = fields["dtype"] as? String else { throw bad("tensor '\(name)' has no \"dtype\" string") }
            guard let dtype = DType(safetensorsName: dtypeName) else {
                throw SafetensorsError.unknownDType(file: file, tensor: name, dtype: dtypeName)
            }
            guard let shape = nonNegativeInts(fields["shape"]) else {
                throw bad("tensor '\(name)' has no \"shape\" list of non-negative integers")
            }
            guard let offsets = nonNegativeInts(fields["data_offsets"]), offsets.count == 2, offsets[0] <= offsets[1] else {
                throw bad("tensor '\(name)' has no \"data_offsets\" pair [begin, end] with begin ≤ end")
            }
            var needed = dtype.byteSize
            for dimension in shape {
                let (product, overflow) = needed.multipliedReportingOverflow(by: dimension)
                guard !overflow else { throw bad("tensor '\(name)' has shape \(shape), too large to address") }
                needed = product
            }
            guard offsets[1] - offsets[0] == needed else {
                throw bad("tensor '\(name)' has data_offsets \(offsets) spanning \(offsets[1] - offsets[0]) bytes, "
                          + "but shape \(shape) of \(dtypeName) needs \(needed)")
            }
            guard offsets[1] <= dataLength else {
                throw SafetensorsError.truncated(
                    file: file, reason: "tensor '\(name)' ends at byte \(offsets[1]) of the data section, which has "
                        + "only \(dataLength) bytes")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, begin: offsets[0], end: offsets[1])
        }
        return (entries, metadata)
    }

    /// A JSON list of integers ≥ 0, or nil (also for fractions, which `as? Int` refuses).
    private static func nonNegativeInts(_ value: Any?) -> [Int]? {
        guard let list = value as? [Any] else { return nil }
        var result: [Int] = []
        for element in list {
            guard let number = element as? Int, number >= 0 else { return nil }
            result.append(number)
        }
        return result
    }
}

/// The text of the current `errno`, for io error messages.
func errnoText() -> String { String(cString: strerror(errno)) }
