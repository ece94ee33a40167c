import Foundation

/// Where training reports go: one JSON object per line (to stdout and, when given, a file), and a progress bar on
/// stderr when stdout is a terminal.
public final class TrainingLog {
    let file: FileHandle?
    let drawsProgress: Bool
    let startTime = Date()
    var progressDrawn = false

    public init(jsonLinesFile: URL?, drawProgress: Bool = isatty(STDOUT_FILENO) == 1) throws {
        if let url = jsonLinesFile {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            if !FileManager.default.fileExists(atPath: url.path) {
                _ = FileManager.default.createFile(atPath: url.path, contents: nil)
            }
            file = try FileHandle(forWritingTo: url)
            try file?.seekToEnd()
        } else {
            file = nil
        }
        drawsProgress = drawProgress
    }

    deinit { try? file?.close() }

    public func record(_ metrics: StepMetrics) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(metrics) else { return }
        let line = String(decoding: data, as: UTF8.self) + "\n"
        clearProgress()
        FileHandle.standardOutput.write(Data(line.utf8))
        file?.write(Data(line.utf8))
    }

    /// A one-line bar: step/total, percentage, loss, speed and time left.
    public func progress(step: Int, total: Int, metrics: StepMetrics) {
        guard drawsProgress, total > 0 else { return }
        let fraction = Double(step) / Double(total)
        let width = 30, filled = Int(fraction * Double(width))
        let elapsed = Date().timeIntervalSince(startTime)
        let remaining = fraction > 0 ? elapsed / fraction - elapsed : 0
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        let line = String(format: "\r%@ %d/%d %3.0f%% loss %.4f %.1f img/s ETA %@", bar, step, total, fraction * 100,
                          metrics.loss, metrics.imagesPerSecond, Self.duration(remaining))
        FileHandle.standardError.write(Data(line.utf8))
        progressDrawn = true
    }

    public func finish() { clearProgress() }

    func clearProgress() {
        guard progressDrawn else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        progressDrawn = false
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
