import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes safetensors files that the reference implementation (and PyTorch users) can read.
///
/// Layout choices, each what the reference writer does:
/// - tensors ordered by element size, largest first, then by name: as the data section starts 8-byte aligned
///   and has no gaps, every tensor then starts at a multiple of its element size, so a mapped file can be read
///   in place;
/// - the header lists `"__metadata__"` first, then the tensors in data order, and is padded with spaces to a
///   multiple of 8 bytes.
///
/// Crash safety: the file is written to `<target>.tmp-<pid>` in the same directory, synced, renamed over the
/// target and the directory synced, so the target name only ever holds the old file or the complete new one.
public enum SafetensorsWriter {
    /// Writes device tensors, downloading them one at a time (peak host memory is one tensor, not the model).
    public static func write(_ tensors: [(name: String, tensor: Tensor)], metadata: [String: String] = [:],
                             to url: URL, backend: some MemoryOps) throws {
        let pending = tensors.map { item in
            Pending(name: item.name, dtype: item.tensor.dtype, shape: item.tensor.shape,
                    bytes: { backend.downloadBytes(item.tensor) })
        }
        try write(pending, metadata: metadata, to: url)
    }

    /// Writes host tensors given as raw little-endian bytes of their dtype (see `encodeFloats`).
    public static func write(_ entries: [(name: String, dtype: DType, shape: [Int], bytes: [UInt8])],
                             metadata: [String: String] = [:], to url: URL) throws {
        let pending = entries.map { entry in
            Pending(name: entry.name, dtype: entry.dtype, shape: entry.shape, bytes: { entry.bytes })
        }
        try write(pending, metadata: metadata, to: url)
    }

    /// A tensor waiting to be written; its bytes are produced only when its turn comes.
    struct Pending {
        var name: String
        var dtype: DType
        var shape: [Int]
        var bytes: () -> [UInt8]
        var byteCount: Int { shape.reduce(1, *) * dtype.byteSize }
    }

    static func write(_ pending: [Pending], metadata: [String: String], to url: URL) throws {
        let names = pending.map(\.name)
        precondition(Set(names).count == names.count, "SafetensorsWriter: duplicate tensor names in \(names)")
        precondition(!names.contains("__metadata__"), "SafetensorsWriter: '__metadata__' is reserved, not a tensor name")

        let ordered = pending.sorted { a, b in
            a.dtype.byteSize != b.dtype.byteSize ? a.dtype.byteSize > b.dtype.byteSize : a.name < b.name
        }
        let header = headerBytes(ordered, metadata: metadata)

        let path = url.path
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else {
            throw SafetensorsError.io(file: path, reason: "cannot create '\(temporary)': \(errnoText())")
        }
        var isOpen = true
        do {
            var length = UInt64(header.count).littleEndian
            try withUnsafeBytes(of: &length) { try writeAll(fd, $0, path: path) }
            try header.withUnsafeBytes { try writeAll(fd, $0, path: path) }
            for tensor in ordered {
                let bytes = tensor.bytes()
                precondition(bytes.count == tensor.byteCount, "SafetensorsWriter: tensor '\(tensor.name)' of shape "
                             + "\(tensor.shape) \(tensor.dtype) has \(bytes.count) bytes, expected \(tensor.byteCount)")
                try bytes.withUnsafeBytes { try writeAll(fd, $0, path: path) }
            }
            guard fsync(fd) == 0 else { throw SafetensorsError.io(file: path, reason: "fsync failed: \(errnoText())") }
            isOpen = false
            // close can report a delayed write error (e.g. on network filesystems), so it is checked too.
            guard close(fd) == 0 else { throw SafetensorsError.io(file: path, reason: "close failed: \(errnoText())") }
            guard rename(temporary, path) == 0 else {
                throw SafetensorsError.io(file: path, reason: "rename from '\(temporary)' failed: \(errnoText())")
            }
        } catch {
            if isOpen { close(fd) }
            unlink(temporary)
            throw error
        }
        try syncDirectory(containing: url)
    }

    /// The JSON header, padded with spaces to a multiple of 8 bytes.
    static func headerBytes(_ ordered: [Pending], metadata: [String: String]) -> [UInt8] {
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            fields.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for tensor in ordered {
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            fields.append("\(jsonString(tensor.name)):{\"dtype\":\"\(tensor.dtype.safetensorsName)\",\"shape\":[\(shape)],"
                          + "\"data_offsets\":[\(offset),\(offset + tensor.byteCount)]}")
            offset += tensor.byteCount
        }
        var bytes = Array("{\(fields.joined(separator: ","))}".utf8)
        bytes += [UInt8](repeating: UInt8(ascii: " "), count: (8 - bytes.count % 8) % 8)
        return bytes
    }

    /// `text` as a JSON string literal.
    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < bytes.count {
            let written = posixWrite(fd, bytes.baseAddress! + done, bytes.count - done)
            if written < 0 {
                if errno == EINTR { continue }
                throw SafetensorsError.io(file: path, reason: "write failed: \(errnoText())")
            }
            done += written
        }
    }

    /// Makes the rename itself durable: without this a power cut can bring back the old directory entry.
    private static func syncDirectory(containing url: URL) throws {
        let directory = url.deletingLastPathComponent().path
        let fd = open(directory, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else {
            throw SafetensorsError.io(file: url.path, reason: "cannot open directory '\(directory)' to sync it: \(errnoText())")
        }
        defer { close(fd) }
        // Some filesystems cannot sync a directory (EINVAL); the rename is then as durable as they make it.
        guard fsync(fd) == 0 || errno == EINVAL else {
            throw SafetensorsError.io(file: url.path, reason: "fsync of directory '\(directory)' failed: \(errnoText())")
        }
    }
}

/// The POSIX `write`, under a name the enum's own `write` methods do not shadow.
private func posixWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    write(fd, buffer, count)
}
