import Foundation

/// Writes a small file whole or not at all: to a hidden temporary name beside it, then renamed over it (atomic:
/// a reader sees the old file or the new one, never a part).
public enum AtomicFile {
    public static func write(_ data: Data, to url: URL) throws {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).partial")
        try data.write(to: temporary)
        guard rename(temporary.path, url.path) == 0 else {
            throw DataError.encodeFailed(path: url.path, reason: String(cString: strerror(errno)))
        }
    }
}
