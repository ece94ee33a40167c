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
/// the run's. A bucket may also have a keep probability (Open-Sora's other bucket number): a video whose best bucket
/// it is goes there with that probability, else on to its next best, which spreads videos over more buckets. The
/// draw is made once per video when the data is read (Open-Sora draws again every epoch).
public struct VideoBuckets: Sendable, Equatable {
    public let buckets: [VideoBucket]
    /// The batch size of each bucket that has its own.
    public let batchSizes: [VideoBucket: Int]
    /// The keep probability of each bucket that has one (the others keep every video they are best for).
    public let keepProbabilities: [VideoBucket: Double]

    public init(_ buckets: [VideoBucket], batchSizes: [VideoBucket: Int] = [:],
                keepProbabilities: [VideoBucket: Double] = [:]) throws {
        guard !buckets.isEmpty, buckets.allSatisfy({ $0.height > 0 && $0.width > 0 && $0.frames > 0 }),
              Set(buckets).count == buckets.count else {
            throw DataError.badOption("buckets must be distinct, with positive sizes (got \(buckets))")
        }
        guard batchSizes.allSatisfy({ buckets.contains($0.key) && $0.value > 0 }) else {
            throw DataError.badOption("bucket batch sizes must be positive, for buckets of the list "
                                      + "(got \(batchSizes))")
        }
        guard keepProbabilities.allSatisfy({ buckets.contains($0.key) && $0.value > 0 && $0.value <= 1 }) else {
            throw DataError.badOption("bucket keep probabilities must be in (0, 1], for buckets of the list "
                                      + "(got \(keepProbabilities))")
        }
        self.buckets = buckets
        self.batchSizes = batchSizes
        self.keepProbabilities = keepProbabilities
    }

    /// "HxWxF[:BATCH][@KEEP],…", e.g. "16x16x8:32,16x24x8:24@0.5,24x16x4" (the last at the run's batch size, the
    /// first and last keeping every video they are best for).
    public init(spec: String) throws {
        var buckets: [VideoBucket] = [], batchSizes: [VideoBucket: Int] = [:], keep: [VideoBucket: Double] = [:]
        for item in spec.split(separator: ",", omittingEmptySubsequences: false) {
            let kept = item.trimmingCharacters(in: .whitespaces).split(separator: "@", omittingEmptySubsequences: false)
            let parts = kept[0].split(separator: ":", omittingEmptySubsequences: false)
            let numbers = parts[0].split(separator: "x").compactMap { Int($0) }
            let batch = parts.count == 2 ? Int(parts[1]) : nil
            let probability = kept.count == 2 ? Double(kept[1]) : nil
            guard kept.count <= 2, parts.count <= 2, numbers.count == 3, parts.count == 1 || batch != nil,
                  kept.count == 1 || probability != nil else {
                throw DataError.badOption("--buckets '\(spec)': give HEIGHTxWIDTHxFRAMES buckets, each with an "
                                          + "optional :BATCH size and @KEEP probability, separated by commas, e.g. "
                                          + "16x16x8:32,16x24x8:24@0.5,24x16x4")
            }
            let bucket = VideoBucket(height: numbers[0], width: numbers[1], frames: numbers[2])
            buckets.append(bucket)
            if let batch { batchSizes[bucket] = batch }
            if let probability { keep[bucket] = probability }
        }
        try self.init(buckets, batchSizes: batchSizes, keepProbabilities: keep)
    }

    /// The bucket of a video of `height` × `width` with `frames` frames (nil where unknown): of the buckets it can
    /// fill without upscaling and with enough frames (`frameInterval` apart), the closest in aspect ratio (log
    /// distance), then the largest in area, then the longest — the first in that order that `keeps` (a draw
    /// against its keep probability; every bucket without one keeps). Nil when none fits or keeps.
    public func assign(height: Int?, width: Int?, frames: Int?, frameInterval: Int = 1,
                       keeps: (_ bucket: VideoBucket, _ probability: Double) -> Bool = { _, _ in true })
        -> VideoBucket? {
        let fitting = buckets.filter { bucket in
            (height.map { bucket.height <= $0 } ?? true) && (width.map { bucket.width <= $0 } ?? true)
                && (frames.map { (bucket.frames - 1) * frameInterval + 1 <= $0 } ?? true)
        }
        let aspect = height.flatMap { h in width.map { Double($0) / Double(h) } }
        let preferred = fitting.indices.sorted { i, j in
            let (a, b) = (fitting[i], fitting[j])
            let (da, db) = aspect.map { (abs(log(a.aspect / $0)), abs(log(b.aspect / $0))) } ?? (0, 0)
            if abs(da - db) > 1e-9 { return da < db }
            if a.height * a.width != b.height * b.width { return a.height * a.width > b.height * b.width }
            return a.frames != b.frames ? a.frames > b.frames : i < j  // then the order of the list
        }.map { fitting[$0] }
        return preferred.first { bucket in keepProbabilities[bucket].map { keeps(bucket, $0) } ?? true }
    }
}
