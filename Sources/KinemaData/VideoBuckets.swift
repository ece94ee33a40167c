import Foundation

/// One clip shape a batch can have: height × width pixels, `frames` frames.
public struct VideoBucket: Hashable, Codable, Sendable, CustomStringConvertible {
    public var height, width, frames: Int

    public init(height: Int, width: Int, frames: Int) { (self.height, self.width, self.frames) = (height, width, frames) }

    public var description: String { "\(height)x\(width)x\(frames)" }
    var aspect: Double { Double(width) / Double(height) }
}

/// Buckets by resolution, aspect ratio and frame count (Open-Sora's dynamic resolution): every video goes to one
/// bucket, every batch comes from one bucket, so one run trains on mixed sizes without padding. A bucket may have its
/// own batch size (larger clips in smaller batches, as Open-Sora's bucket configs give them); the others train at
/// the run's.
public struct VideoBuckets: Sendable, Equatable {
    public let buckets: [VideoBucket]
    /// The batch size of each bucket that has its own.
    public let batchSizes: [VideoBucket: Int]

    public init(_ buckets: [VideoBucket], batchSizes: [VideoBucket: Int] = [:]) throws {
        guard !buckets.isEmpty, buckets.allSatisfy({ $0.height > 0 && $0.width > 0 && $0.frames > 0 }),
              Set(buckets).count == buckets.count else {
            throw DataError.badOption("buckets must be distinct, with positive sizes (got \(buckets))")
        }
        guard batchSizes.allSatisfy({ buckets.contains($0.key) && $0.value > 0 }) else {
            throw DataError.badOption("bucket batch sizes must be positive, for buckets of the list "
                                      + "(got \(batchSizes))")
        }
        self.buckets = buckets
        self.batchSizes = batchSizes
    }

    /// "HxWxF[:BATCH],…", e.g. "16x16x8:32,16x24x8:24,24x16x4" (the last at the run's batch size).
    public init(spec: String) throws {
        var buckets: [VideoBucket] = [], batchSizes: [VideoBucket: Int] = [:]
        for item in spec.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.trimmingCharacters(in: .whitespaces)
                .split(separator: ":", omittingEmptySubsequences: false)
            let numbers = parts[0].split(separator: "x").compactMap { Int($0) }
            let batch = parts.count == 2 ? Int(parts[1]) : nil
            guard parts.count <= 2, numbers.count == 3, parts.count == 1 || batch != nil else {
                throw DataError.badOption("--buckets '\(spec)': give HEIGHTxWIDTHxFRAMES buckets, each with an "
                                          + "optional :BATCH size, separated by commas, e.g. "
                                          + "16x16x8:32,16x24x8:24,24x16x4")
            }
            let bucket = VideoBucket(height: numbers[0], width: numbers[1], frames: numbers[2])
            buckets.append(bucket)
            if let batch { batchSizes[bucket] = batch }
        }
        try self.init(buckets, batchSizes: batchSizes)
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
