import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors of the data pipeline. Each names the file or folder concerned and, for ffmpeg failures, what ffmpeg said.
public enum DataError: Error, CustomStringConvertible, Equatable {
    /// ffmpeg is not installed (or `KINEMA_FFMPEG` does not name an executable).
    case ffmpegNotFound(detail: String)
    /// ffmpeg could not be started.
    case ffmpegLaunchFailed(executable: String, reason: String)
    /// ffmpeg could not decode the file (`reason` is its stderr, or what was wrong with its output).
    case decodeFailed(path: String, reason: String)
    /// ffmpeg could not write the file.
    case encodeFailed(path: String, reason: String)
    /// The file to decode does not exist.
    case fileNotFound(path: String)
    /// The dataset root folder does not exist or is not a folder.
    case rootNotFound(path: String)
    /// The dataset root exists but holds no usable class folders or images.
    case emptyDataset(path: String, reason: String)
    /// A dataset index outside 0..<count.
    case indexOutOfRange(index: Int, count: Int)
    /// A data option that does not parse or does not fit (buckets, sizes).
    case badOption(String)

    public var description: String {
        switch self {
        case .ffmpegNotFound(let detail):
            return "ffmpeg not found: \(detail). Install it (`apt-get install ffmpeg`, or `make deps`), "
                + "or set KINEMA_FFMPEG to the ffmpeg executable."
        case .ffmpegLaunchFailed(let executable, let reason):
            return "could not run \(executable): \(reason)"
        case .decodeFailed(let path, let reason):
            return "cannot decode \(path): \(reason)"
        case .encodeFailed(let path, let reason):
            return "cannot write \(path): \(reason)"
        case .fileNotFound(let path):
            return "no such file: \(path)"
        case .rootNotFound(let path):
            return "dataset folder \(path) does not exist (expected one subfolder of images per class)"
        case .emptyDataset(let path, let reason):
            return "dataset folder \(path) is unusable: \(reason)"
        case .indexOutOfRange(let index, let count):
            return "sample index \(index) out of range 0..<\(count)"
        case .badOption(let reason):
            return reason
        }
    }
}

/// Image decoding and encoding through the `ffmpeg` command-line tool (one process per file), so every format
/// ffmpeg reads works without linking an image library.
public enum FFmpeg {
    /// The ffmpeg executable: `KINEMA_FFMPEG` if set (it must be executable), else the first `ffmpeg` on `PATH`.
    public static func executable(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        let fileManager = FileManager.default
        if let configured = environment["KINEMA_FFMPEG"], !configured.isEmpty {
            guard fileManager.isExecutableFile(atPath: configured) else {
                throw DataError.ffmpegNotFound(detail: "KINEMA_FFMPEG=\(configured) is not an executable file")
            }
            return configured
        }
        let path = environment["PATH"] ?? ""
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = String(directory) + "/ffmpeg"
            if fileManager.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw DataError.ffmpegNotFound(detail: "no `ffmpeg` executable on PATH (\(path))")
    }

    /// Decodes the first frame of any image (or video) ffmpeg reads to 8-bit RGB. Alpha is dropped.
    public static func decodeImage(atPath path: String) throws -> RGBImage {
        guard FileManager.default.fileExists(atPath: path) else { throw DataError.fileNotFound(path: path) }
        // PPM through a pipe: the same rgb24 bytes as `-f rawvideo -pix_fmt rgb24`, behind a small header that
        // carries the decoded frame's size, so no separate ffprobe run is needed.
        let result = try run(arguments: ["-v", "error", "-nostdin", "-i", "file:" + path, "-frames:v", "1",
                                         "-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "-"])
        guard result.status == 0 else {
            throw DataError.decodeFailed(path: path, reason: result.errorText(or: "ffmpeg exited with status \(result.status)"))
        }
        do {
            return try parsePPM(result.output)
        } catch let reason as PPMError {
            throw DataError.decodeFailed(path: path, reason: result.errorText(or: reason.message))
        }
    }

    /// Writes `image` as a PNG (or whatever format the extension of `path` selects) through ffmpeg, replacing any
    /// existing file.
    public static func writeImage(_ image: RGBImage, toPath path: String) throws {
        guard image.width > 0 && image.height > 0 else {
            throw DataError.encodeFailed(path: path, reason: "image is empty (\(image.width)×\(image.height))")
        }
        let result = try run(arguments: ["-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                                         "-s", "\(image.width)x\(image.height)", "-i", "-",
                                         "-frames:v", "1", "file:" + path],
                             input: Data(image.pixels))
        guard result.status == 0 else {
            throw DataError.encodeFailed(path: path, reason: result.errorText(or: "ffmpeg exited with status \(result.status)"))
        }
    }

    /// Writes `frames` (all of one size) as a video at `fps` frames per second: H.264 in yuv420p (what every player
    /// plays) for .mp4/.mkv/.mov, an optimised-palette GIF for .gif. Each frame is first scaled `scale` times with
    /// nearest-neighbour sampling (tiny generated clips stay sharp), and its sides are rounded up to even numbers,
    /// which H.264 in yuv420p needs.
    public static func writeVideo(_ frames: [RGBImage], fps: Double, scale: Int = 1, toPath path: String) throws {
        guard let first = frames.first, first.width > 0, first.height > 0 else {
            throw DataError.encodeFailed(path: path, reason: "no frames to write")
        }
        guard frames.allSatisfy({ $0.width == first.width && $0.height == first.height }) else {
            throw DataError.encodeFailed(path: path, reason: "frames differ in size")
        }
        guard fps > 0, scale >= 1 else {
            throw DataError.encodeFailed(path: path, reason: "fps must be positive and scale at least 1")
        }
        let width = first.width * scale, height = first.height * scale
        var filter = "scale=\(width + width % 2):\(height + height % 2):flags=neighbor"
        var codec: [String]
        if path.lowercased().hasSuffix(".gif") {
            filter += ",split[a][b];[a]palettegen[p];[b][p]paletteuse"
            codec = ["-loop", "0"]
        } else {
            codec = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-movflags", "+faststart"]
        }
        var input = Data(capacity: frames.count * first.pixels.count)
        for frame in frames { input.append(contentsOf: frame.pixels) }
        let result = try run(arguments: ["-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                                         "-s", "\(first.width)x\(first.height)", "-r", "\(fps)", "-i", "-",
                                         "-vf", filter] + codec + ["file:" + path],
                             input: input)
        guard result.status == 0 else {
            throw DataError.encodeFailed(path: path, reason: result.errorText(or: "ffmpeg exited with status \(result.status)"))
        }
    }

    /// Decodes every frame of a video (or the first `maxFrames`) to 8-bit RGB, at its own size.
    public static func decodeVideo(atPath path: String, maxFrames: Int? = nil) throws -> [RGBImage] {
        guard FileManager.default.fileExists(atPath: path) else { throw DataError.fileNotFound(path: path) }
        let limit = maxFrames.map { ["-frames:v", "\($0)"] } ?? []
        let result = try run(arguments: ["-v", "error", "-nostdin", "-i", "file:" + path] + limit
                                + ["-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "-"])
        guard result.status == 0 else {
            throw DataError.decodeFailed(path: path, reason: result.errorText(or: "ffmpeg exited with status \(result.status)"))
        }
        do {
            let bytes = [UInt8](result.output)
            var frames: [RGBImage] = [], cursor = 0
            while cursor < bytes.count {
                let (frame, end) = try parsePPMFrame(bytes, from: cursor)
                frames.append(frame)
                cursor = end
            }
            guard !frames.isEmpty else { throw PPMError(message: "no video frames") }
            return frames
        } catch let reason as PPMError {
            throw DataError.decodeFailed(path: path, reason: result.errorText(or: reason.message))
        }
    }

    /// What a video file holds: frame count (packets read), size and frame rate, through ffprobe (installed with
    /// ffmpeg, found beside it).
    public struct VideoInfo: Equatable, Sendable {
        public var frames, width, height: Int
        public var fps: Double
    }

    public static func probeVideo(atPath path: String) throws -> VideoInfo {
        guard FileManager.default.fileExists(atPath: path) else { throw DataError.fileNotFound(path: path) }
        let ffprobe = URL(fileURLWithPath: try executable()).deletingLastPathComponent().appendingPathComponent("ffprobe").path
        guard FileManager.default.isExecutableFile(atPath: ffprobe) else {
            throw DataError.ffmpegNotFound(detail: "no ffprobe beside ffmpeg (\(ffprobe))")
        }
        let result = try run(executable: ffprobe, arguments: [
            "-v", "error", "-select_streams", "v:0", "-count_packets",
            "-show_entries", "stream=width,height,r_frame_rate,nb_read_packets", "-of", "csv=p=0", "file:" + path])
        let fields = String(decoding: result.output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            .split(separator: ",").map(String.init)
        let rate = fields.count == 4 ? fields[2].split(separator: "/").compactMap { Double($0) } : []
        guard result.status == 0, fields.count == 4, let width = Int(fields[0]), let height = Int(fields[1]),
              let frames = Int(fields[3]), frames > 0, rate.count == 2, rate[1] > 0 else {
            throw DataError.decodeFailed(path: path, reason: result.errorText(or: "no video stream"))
        }
        return VideoInfo(frames: frames, width: width, height: height, fps: rate[0] / rate[1])
    }

    // Paths go to ffmpeg as `file:PATH` so a name with a colon (or a leading dash) is never read as a protocol or
    // an option.

    // MARK: Process plumbing

    struct ProcessResult {
        var status: Int32
        var output: Data
        var error: Data

        func errorText(or fallback: String) -> String {
            let text = String(decoding: error, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return text.isEmpty ? fallback : text
        }
    }

    private final class DataBox: @unchecked Sendable { var data = Data() }

    /// Writing to a pipe whose reader has exited raises SIGPIPE, which would kill the whole training run when
    /// ffmpeg rejects its input early; ignore it once, process-wide, so the write fails with EPIPE instead.
    private static let ignoreSIGPIPE: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    /// Runs ffmpeg with `arguments`, feeding `input` to its stdin from a background thread while stderr is drained
    /// on another and stdout is read here to the end, so no pipe can fill up and deadlock.
    static func run(executable path: String? = nil, arguments: [String], input: Data? = nil) throws -> ProcessResult {
        _ = ignoreSIGPIPE
        let executable = try path ?? executable()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let stdout = Pipe(), stderr = Pipe()
        let stdin: Pipe? = input == nil ? nil : Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = stdin ?? FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw DataError.ffmpegLaunchFailed(executable: executable, reason: "\(error)")
        }
        let group = DispatchGroup()
        let errorBox = DataBox()
        DispatchQueue.global().async(group: group) {
            errorBox.data = stderr.fileHandleForReading.readDataToEndOfFile()
        }
        if let stdin, let input {
            DispatchQueue.global().async(group: group) {
                let handle = stdin.fileHandleForWriting
                try? handle.write(contentsOf: input)  // EPIPE if ffmpeg gave up: its stderr says why
                try? handle.close()
            }
        }
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        try? stdout.fileHandleForReading.close()
        try? stderr.fileHandleForReading.close()
        return ProcessResult(status: process.terminationStatus, output: output, error: errorBox.data)
    }

    struct PPMError: Error { var message: String }

    /// Parses a binary PPM (`P6`, maxval 255): header tokens separated by whitespace, `#` comments, then one
    /// whitespace byte before the pixels.
    static func parsePPM(_ data: Data) throws -> RGBImage {
        try parsePPMFrame([UInt8](data), from: 0).image
    }

    /// The PPM frame that starts at `start` in `bytes` and the index just past it (image2pipe writes the frames
    /// back to back).
    static func parsePPMFrame(_ bytes: [UInt8], from start: Int) throws -> (image: RGBImage, end: Int) {
        var cursor = start
        func token() throws -> String {
            while cursor < bytes.count {
                if bytes[cursor] == UInt8(ascii: "#") {
                    while cursor < bytes.count && bytes[cursor] != UInt8(ascii: "\n") { cursor += 1 }
                } else if isSpace(bytes[cursor]) {
                    cursor += 1
                } else {
                    break
                }
            }
            let start = cursor
            while cursor < bytes.count && !isSpace(bytes[cursor]) { cursor += 1 }
            guard cursor > start else { throw PPMError(message: "ffmpeg produced no image data") }
            return String(decoding: bytes[start..<cursor], as: UTF8.self)
        }
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 }
        guard try token() == "P6" else { throw PPMError(message: "unexpected output from ffmpeg (not a PPM frame)") }
        guard let width = Int(try token()), let height = Int(try token()), let maxValue = Int(try token()),
              width > 0, height > 0, maxValue == 255 else {
            throw PPMError(message: "unexpected PPM header from ffmpeg")
        }
        cursor += 1
        let byteCount = width * height * 3
        guard bytes.count - cursor >= byteCount else {
            throw PPMError(message: "truncated frame from ffmpeg (\(bytes.count - cursor) of \(byteCount) bytes)")
        }
        return (RGBImage(width: width, height: height, pixels: Array(bytes[cursor..<(cursor + byteCount)])),
                cursor + byteCount)
    }
}

extension RGBImage {
    /// Decodes an image file through ffmpeg (see `FFmpeg.decodeImage(atPath:)`).
    public init(contentsOfFile path: String) throws {
        self = try FFmpeg.decodeImage(atPath: path)
    }

    /// Writes the image through ffmpeg; the format follows the extension (`.png` is lossless).
    public func write(toFile path: String) throws {
        try FFmpeg.writeImage(self, toPath: path)
    }
}

/// Tiles `images` into a grid of `columns` columns (fewer if there are fewer images), row by row, with
/// `padding` pixels of `background` around and between the cells — the layout of torchvision's `make_grid`.
/// Cells are as large as the largest image; smaller images sit at their cell's top-left corner.
public func makeGrid(images: [RGBImage], columns: Int, padding: Int = 2,
                     background: (UInt8, UInt8, UInt8) = (0, 0, 0)) -> RGBImage {
    precondition(columns > 0, "grid needs at least one column")
    precondition(padding >= 0, "negative grid padding")
    guard !images.isEmpty else { return RGBImage(width: 0, height: 0, pixels: []) }
    let columnCount = min(columns, images.count)
    let rowCount = (images.count + columnCount - 1) / columnCount
    let cellWidth = images.map(\.width).max()!, cellHeight = images.map(\.height).max()!
    let width = columnCount * cellWidth + (columnCount + 1) * padding
    let height = rowCount * cellHeight + (rowCount + 1) * padding
    var grid = RGBImage(width: width, height: height, fill: background)
    for (index, image) in images.enumerated() {
        let left = padding + (index % columnCount) * (cellWidth + padding)
        let top = padding + (index / columnCount) * (cellHeight + padding)
        for y in 0..<image.height {
            let source = 3 * y * image.width, target = 3 * ((top + y) * width + left)
            grid.pixels.replaceSubrange(target..<(target + 3 * image.width),
                                        with: image.pixels[source..<(source + 3 * image.width)])
        }
    }
    return grid
}
