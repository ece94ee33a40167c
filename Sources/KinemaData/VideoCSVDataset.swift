import Foundation
import KinemaTensor

/// Captioned videos listed in a CSV file, as Open-Sora and OpenDiT lay them out: a header row, then one row per
/// video with `path` (absolute, or relative to the CSV's folder) and `text` (its caption), and optionally
/// `num_frames`, `height`, `width` and `fps` (read when present; a row whose `num_frames` is known to be too short
/// is left out up front). Fields follow RFC 4180: a field in double quotes may hold commas, newlines and doubled
/// quotes.
///
/// A sample is `frames` frames taken every `frameInterval` frames from a random start where `num_frames` tells how
/// long the video is (Open-Sora's temporal random crop; from the first frame otherwise), each resized so its short
/// side is `imageSize` and centre-cropped square, as floats in [-1, 1]. With `buckets` each video instead gets the
/// bucket `VideoBuckets.assign` picks from its size and length (the CSV's columns, else ffprobe's) and is cropped and
/// resized to that bucket's height × width and frame count; a batch holds one bucket (see `sampleGroups`), and a
/// video no bucket fits is left out with a report. A video that cannot be decoded, or is too short, is reported once
/// ("skipping video PATH: reason") and never tried again; the batch takes a random other video of its bucket in its
/// place, so batches stay full.
public final class VideoCSVDataset: VideoDataSource, @unchecked Sendable {
    public struct Row: Equatable, Sendable {
        public var path: String
        public var text: String
        public var numFrames: Int?, height: Int?, width: Int?
        public var fps: Double?
    }

    public let csvPath: String
    public let rows: [Row]
    /// The clip shape of each row (every row the same without buckets).
    public let shapes: [VideoBucket]
    public let buckets: VideoBuckets?
    /// Without buckets, the clip shape; with them, the first bucket's frames and height (what sampling defaults to).
    public let frames: Int
    public let frameInterval: Int
    public let imageSize: Int
    public var report: (String) -> Void
    /// The rows of each clip shape, in row order: a batch's bucket peers and the sample groups, found once.
    private let members: [VideoBucket: [Int]]
    private let lock = NSLock()
    private var bad: Set<Int> = []

    public var count: Int { rows.count }
    public var heldOutCaptions: [String] { [] }
    /// Frames a clip of `frames` frames spans in its source video.
    func span(_ frames: Int) -> Int { (frames - 1) * frameInterval + 1 }

    public var sampleGroups: [SampleGroup]? {
        buckets.map { buckets in
            buckets.buckets.compactMap { bucket in
                members[bucket].map { SampleGroup($0, batchSize: buckets.batchSizes[bucket]) }
            }
        }
    }

    public var clipShapes: [VideoBucket] { Array(Set(shapes)).sorted { $0.description < $1.description } }

    /// `seed` drives the buckets' keep draws (one stream over the rows in order).
    public init(csv: String, frames: Int, frameInterval: Int = 1, imageSize: Int, buckets: VideoBuckets? = nil,
                seed: UInt64 = 0,
                report: @escaping (String) -> Void = ImageFolderDataset.printToStandardError) throws {
        precondition(frames >= 1 && frameInterval >= 1 && imageSize > 0,
                     "frames, frame interval and image size must be positive")
        guard let data = FileManager.default.contents(atPath: csv) else { throw DataError.fileNotFound(path: csv) }
        let table = try Self.parseCSV(String(decoding: data, as: UTF8.self), path: csv)
        guard let header = table.first else { throw DataError.emptyDataset(path: csv, reason: "the file is empty") }
        let columns = Dictionary(header.enumerated().map { ($1.trimmingCharacters(in: .whitespaces), $0) }) { a, _ in a }
        guard columns["path"] != nil, columns["text"] != nil else {
            throw DataError.emptyDataset(path: csv, reason: "the header must name the columns `path` and `text` "
                                         + "(found \(header.joined(separator: ", ")))")
        }
        let folder = URL(fileURLWithPath: csv).deletingLastPathComponent()
        let span = (frames - 1) * frameInterval + 1
        var rows: [Row] = [], shapes: [VideoBucket] = [], short = 0, unfitting = 0, unkept = 0
        var keepDraws = RandomStream(seed: seed)
        for (number, fields) in table.dropFirst().enumerated() where !(fields.count == 1 && fields[0].isEmpty) {
            func field(_ name: String) -> String? {
                columns[name].flatMap { $0 < fields.count ? fields[$0].trimmingCharacters(in: .whitespaces) : nil }
                    .flatMap { $0.isEmpty ? nil : $0 }
            }
            guard let path = field("path") else {
                throw DataError.emptyDataset(path: csv, reason: "row \(number + 2) has no path")
            }
            let row = Row(path: path.hasPrefix("/") ? path : folder.appendingPathComponent(path).path,
                          text: field("text") ?? "", numFrames: field("num_frames").flatMap(Int.init),
                          height: field("height").flatMap(Int.init), width: field("width").flatMap(Int.init),
                          fps: field("fps").flatMap(Double.init))
            guard let buckets else {
                if let known = row.numFrames, known < span {
                    short += 1
                    continue
                }
                rows.append(row)
                shapes.append(VideoBucket(height: imageSize, width: imageSize, frames: frames))
                continue
            }
            var sized = row
            if row.numFrames == nil || row.height == nil || row.width == nil {
                do {
                    let info = try FFmpeg.probeVideo(atPath: row.path)
                    (sized.numFrames, sized.height, sized.width) = (info.frames, info.height, info.width)
                } catch {
                    report("skipping video \(row.path): \(error)")
                    continue
                }
            }
            let draw = { (_: VideoBucket, probability: Double) in Double(keepDraws.nextUniform()) < probability }
            guard let bucket = buckets.assign(height: sized.height, width: sized.width, frames: sized.numFrames,
                                              frameInterval: frameInterval, keeps: draw) else {
                let fits = buckets.assign(height: sized.height, width: sized.width, frames: sized.numFrames,
                                          frameInterval: frameInterval) != nil
                if fits { unkept += 1 } else { unfitting += 1 }
                continue
            }
            rows.append(sized)
            shapes.append(bucket)
        }
        if short > 0 { report("skipping \(short) video(s) of \(csv) shorter than \(span) frames (num_frames column)") }
        if unkept > 0 { report("leaving out \(unkept) video(s) of \(csv) that no bucket they fit kept (@KEEP draws)") }
        if unfitting > 0 {
            report("skipping \(unfitting) video(s) of \(csv) that no bucket fits (smaller or shorter than every one)")
        }
        guard !rows.isEmpty else { throw DataError.emptyDataset(path: csv, reason: "no video rows fit the clip shapes") }
        self.csvPath = csv
        self.rows = rows
        self.shapes = shapes
        members = Dictionary(grouping: shapes.indices, by: { shapes[$0] })
        self.buckets = buckets
        self.frames = buckets?.buckets.first?.frames ?? frames
        self.frameInterval = frameInterval
        self.imageSize = buckets?.buckets.first?.height ?? imageSize
        self.report = report
    }

    /// The clip of video `index` (its shape's frames, height × width, 8-bit) starting at frame `start`, or the reason
    /// it fails.
    public func clip(at index: Int, start: Int) throws -> [RGBImage] {
        let shape = shapes[index], span = span(shape.frames)
        let decoded = try FFmpeg.decodeVideo(atPath: rows[index].path, maxFrames: start + span)
        guard decoded.count >= span else {
            throw DataError.decodeFailed(path: rows[index].path,
                                         reason: "\(decoded.count) frames, fewer than the \(span) a sample spans")
        }
        let first = min(start, decoded.count - span)
        return (0..<shape.frames).map {
            decoded[first + $0 * frameInterval].centerCropResize(width: shape.width, height: shape.height)
        }
    }

    /// The videos at `indices`, which must share a clip shape (one bucket).
    public func batch(indices: [Int], random: inout RandomStream) -> (videos: [Float], shape: [Int], captions: [String]) {
        let shape = shapes[indices[0]], frames = shape.frames
        precondition(indices.allSatisfy { shapes[$0] == shape }, "\(csvPath): a batch mixes clip shapes")
        // Where a bad video's replacement comes from: its bucket (every row without buckets).
        let peers = members[shape]!
        let plane = shape.height * shape.width, videoSize = 3 * frames * plane
        var values = [Float](repeating: 0, count: indices.count * videoSize), captions: [String] = []
        for (slot, requested) in indices.enumerated() {
            var index = requested
            for _ in 0..<(4 * peers.count) {
                let known = rows[index].numFrames.map { max(0, $0 - span(frames)) }
                let start = Int(random.nextUniform() * Float((known ?? 0) + 1))
                lock.lock()
                let isBad = bad.contains(index)
                lock.unlock()
                if !isBad, let clip = try? loadReporting(index, start: start) {
                    for (f, image) in clip.enumerated() {
                        let chw = image.chwFloats()
                        for c in 0..<3 {
                            let target = slot * videoSize + (c * frames + f) * plane
                            values.replaceSubrange(target..<(target + plane), with: chw[(c * plane)..<((c + 1) * plane)])
                        }
                    }
                    captions.append(rows[index].text)
                    break
                }
                index = peers[min(peers.count - 1, Int(random.nextUniform() * Float(peers.count)))]
            }
            precondition(captions.count == slot + 1, "\(csvPath): no decodable video left (see the reports above)")
        }
        return (values, [indices.count, 3, frames, shape.height, shape.width], captions)
    }

    private func loadReporting(_ index: Int, start: Int) throws -> [RGBImage] {
        do {
            return try clip(at: index, start: start)
        } catch {
            lock.lock()
            let first = bad.insert(index).inserted
            lock.unlock()
            if first { report("skipping video \(rows[index].path): \(error)") }
            throw error
        }
    }

    /// RFC 4180 rows: comma-separated fields, double-quoted fields with "" for a quote; CRLF or LF line ends.
    static func parseCSV(_ text: String, path: String) throws -> [[String]] {
        var rows: [[String]] = [], row: [String] = [], field = "", quoted = false, atFieldStart = true
        var iterator = text.makeIterator()
        while let character = iterator.next() {
            if quoted {
                if character == "\"" {
                    // A doubled quote is a quote; a single one ends the quoted part.
                    var lookahead = iterator
                    if lookahead.next() == "\"" { field.append("\""); iterator = lookahead } else { quoted = false }
                } else {
                    field.append(character)
                }
                continue
            }
            switch character {
            case "\"" where atFieldStart: quoted = true; atFieldStart = false
            case ",": row.append(field); field = ""; atFieldStart = true
            case "\n", "\r\n", "\r":
                row.append(field); rows.append(row); row = []; field = ""; atFieldStart = true
            default: field.append(character); atFieldStart = false
            }
        }
        if quoted { throw DataError.emptyDataset(path: path, reason: "a quoted field is not closed") }
        if !field.isEmpty || !row.isEmpty { row.append(field); rows.append(row) }
        return rows
    }
}
