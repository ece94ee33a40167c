import Foundation

/// The golden reference files made by scripts/make_golden.py (see scripts/README-golden.md).
public enum Fixtures {
    public static var directory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures")
    }

    public static func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    /// A fresh empty folder under the system's temporary directory.
    public static func temporaryDirectory(_ label: String = "kinema-test") -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// max |a − b| / max |b|: the relative error the golden tests bound.
public func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "relativeError: \(a.count) vs \(b.count) values")
    var difference = 0.0, scale = 1e-30
    for (x, y) in zip(a, b) {
        difference = max(difference, abs(Double(x) - Double(y)))
        scale = max(scale, abs(Double(y)))
    }
    return difference / scale
}
