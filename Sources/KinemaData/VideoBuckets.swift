import Foundation

/// One clip shape a batch can have: height × width pixels, `frames` frames.
public struct VideoBucket: Hashable, Codable, Sendable, CustomStringConvertible {
    public var height, width, frames: Int

    public init(height: Int, width: Int, frames: Int) { (self.height, self.width, self.frames) = (height, width, frames) }

    public var description: String { "\(height)x\(width)x\(frames)" }
    var aspect: Double { Double(width) / Double(height) }
}

/// Buckets by resolution, aspect ratio and frame count (Open-Sora's dynamic resolution): every video goes to one
/// bucket, every batch comes from one bucket, so one run trains on mixed sizes without padding.
public struct VideoBuckets: Sendable, Equatable {
    public let buckets: [VideoBucket]

    public init(_ buckets: [VideoBucket]) throws {
        guard !buckets.isEmpty, buckets.allSatisfy({ $0.height > 0 && $0.width > 0 && $0.frames > 0 }),
              Set(buckets).count == buckets.count else {
            throw DataError.badOption("buckets must be distinct, with positive sizes (got \(buckets))")
        }
        self.buckets = buckets
    }

    /// "HxWxF,HxWxF,…", e.g. "16x16x8,16x24x8,24x16x4".
    public init(spec: String) throws {
        let parsed = spec.split(separator: ",").map { item -> VideoBucket? in
            let numbers = item.trimmingCharacters(in: .whitespaces).split(separator: "x").compactMap { Int($0) }
            return numbers.count == 3 ? VideoBucket(height: numbers[0], width: numbers[1], frames: numbers[2]) : nil
        }
        guard !parsed.isEmpty, parsed.allSatisfy({ $0 != nil }) else {
            throw DataError.badOption("--buckets '\(spec)': give HEIGHTxWIDTHxFRAMES buckets separated by commas, "
                                      + "e.g. 16x16x8,16x24x8")
        }
        try self.init(parsed.map { $0! })
    }

    /// The bucket of a video of `height` × `width` with `frames` frames (nil where unknown): of the buckets it can
    /// fill without upscaling and with enough frames (`frameInterval` apart), the closest in aspect ratio (log
    /// distance), then the largest in area, then the longest. Nil when none fits.
    public func assign(height: Int?, width: Int?, frames: Int?, frameInterval: Int = 1) -> VideoBucket? {
        let fitting = buckets.filter { bucket in
            (height.map { bucket.height <= $0 } ?? true) && (width.map { bucket.width <= $0 } ?? true)
                && (frames.map { (bucket.frames - 1) * frameInterval + 1 <= $0 } ?? true)
        }
        let aspect = height.flatMap { h in width.map { Double($0) / Double(h) } }
        return fitting.min { a, b in
            let (da, db) = aspect.map { (abs(log(a.aspect / $0)), abs(log(b.aspect / $0))) } ?? (0, 0)
            if abs(da - db) > 1e-9 { return da < db }
            if a.height * a.width != b.height * b.width { return a.height * a.width > b.height * b.width }
            return a.frames > b.frames
        }
    }
}
