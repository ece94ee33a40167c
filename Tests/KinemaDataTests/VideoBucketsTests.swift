import Foundation
import KinemaData
import KinemaTensor
import KinemaTestSupport
import XCTest

/// Buckets by resolution, aspect ratio and frame count: the assignment rule, the grouped sampler, and a CSV of
/// videos of mixed sizes read into per-bucket batches.
final class VideoBucketsTests: XCTestCase {
    func testParsesAndAssignsByAspectThenAreaThenLength() throws {
        let buckets = try VideoBuckets(spec: "16x16x8, 16x24x8,24x16x4,32x32x8")
        XCTAssertEqual(buckets.buckets.count, 4)
        // A wide 20×30 video: 16x24 has its aspect (3:2) and fits; 32x32 would need upscaling.
        XCTAssertEqual(buckets.assign(height: 20, width: 30, frames: 10)?.description, "16x24x8")
        // A tall video too short for 8 frames at interval 2 (15 needed): the 4-frame tall bucket.
        XCTAssertEqual(buckets.assign(height: 30, width: 20, frames: 10, frameInterval: 2)?.description, "24x16x4")
        // A large square video: the squares tie on aspect, the larger wins.
        XCTAssertEqual(buckets.assign(height: 64, width: 64, frames: 30)?.description, "32x32x8")
        XCTAssertNil(buckets.assign(height: 8, width: 8, frames: 30), "smaller than every bucket")
        for bad in ["", "16x16", "16x16x8,16x16x8", "0x16x8", "axbxc", "16x16x8:", "16x16x8:0", "16x16x8:2:3",
                    "16x16x8:b", "16x16x8,"] {
            XCTAssertThrowsError(try VideoBuckets(spec: bad), bad)
        }
        for bad in ["16x16x8@0", "16x16x8@1.5", "16x16x8@", "16x16x8@a", "16x16x8:2@0.5@0.5", "16x16x8@0.5:2"] {
            XCTAssertThrowsError(try VideoBuckets(spec: bad), bad)
        }
        // Keep probabilities: a large square video's best bucket, 32x32x8, keeps it or passes it on to 16x16x8.
        let keeping = try VideoBuckets(spec: "16x16x8,32x32x8:2@0.25")
        XCTAssertEqual(keeping.keepProbabilities, [VideoBucket(height: 32, width: 32, frames: 8): 0.25])
        var asked: [String] = []
        let passed = keeping.assign(height: 64, width: 64, frames: 30) { bucket, probability in
            asked.append("\(bucket)@\(probability)")
            return false
        }
        XCTAssertEqual(passed?.description, "16x16x8")
        XCTAssertEqual(asked, ["32x32x8@0.25"], "only buckets with a probability draw")
        XCTAssertEqual(keeping.assign(height: 64, width: 64, frames: 30) { _, _ in true }?.description, "32x32x8")
        XCTAssertEqual(keeping.assign(height: 64, width: 64, frames: 30)?.description, "32x32x8", "no draw: kept")
        let sized = try VideoBuckets(spec: "16x16x8:6, 32x32x8:2,16x24x8")
        XCTAssertEqual(sized.buckets.map(\.description), ["16x16x8", "32x32x8", "16x24x8"])
        XCTAssertEqual(sized.batchSizes, [VideoBucket(height: 16, width: 16, frames: 8): 6,
                                          VideoBucket(height: 32, width: 32, frames: 8): 2])
    }

    /// Buckets with their own batch sizes: every batch holds one group at that group's size (the others at the
    /// run's), an epoch hands out each group's full batches once, and a state saved between batches of different
    /// sizes resumes exactly.
    func testGroupsTrainAtTheirOwnBatchSizes() throws {
        let groups = [SampleGroup(Array(0..<7), batchSize: 3), SampleGroup(Array(7..<12)),
                      SampleGroup([12, 13], batchSize: 1)]
        var sampler = EpochSampler(count: 14, batchSize: 2, seed: 9, groups: groups)
        XCTAssertEqual(sampler.batchesPerEpoch, 2 + 2 + 2)
        var sizes: [Int: [Int]] = [:], states: [EpochSampler.State] = [], batches: [[Int]] = []
        for _ in 0..<(2 * sampler.batchesPerEpoch) {
            states.append(sampler.state)
            let batch = sampler.nextBatch()
            let group = groups.firstIndex { Set(batch).isSubset(of: $0.indices) }
            XCTAssertNotNil(group, "\(batch) mixes groups")
            sizes[group!, default: []].append(batch.count)
            batches.append(batch)
        }
        XCTAssertEqual(sizes, [0: [3, 3, 3, 3], 1: [2, 2, 2, 2], 2: [1, 1, 1, 1]])
        XCTAssertEqual(Set(batches.prefix(6).joined()).count, 6 + 4 + 2)
        for index in [3, 7] {
            var resumed = try EpochSampler(count: 14, batchSize: 2, seed: 9, groups: groups, resumingAt: states[index])
            XCTAssertEqual(resumed.nextBatch(), batches[index], "resumed from \(states[index])")
        }
        // A position inside a batch (as if saved with other batch sizes): a clear error, not a trap.
        let starts = Set(states.prefix(6).map(\.position))
        let inside = (1...12).first { !starts.contains($0) }!
        XCTAssertThrowsError(try EpochSampler(count: 14, batchSize: 2, seed: 9, groups: groups,
                                              resumingAt: .init(epoch: 0, position: inside)))
    }

    /// Every batch from one group; each epoch hands out each group's full batches once; the same seed and state give
    /// the same batches (resume).
    func testGroupedSamplerKeepsBatchesWithinAGroup() throws {
        let groups = [Array(0..<7), Array(7..<12), [12]]
        var sampler = EpochSampler(count: 13, batchSize: 2, seed: 5, groups: groups.map { SampleGroup($0) })
        XCTAssertEqual(sampler.batchesPerEpoch, 3 + 2)
        var seen: [Int] = []
        for _ in 0..<sampler.batchesPerEpoch {
            let batch = sampler.nextBatch()
            XCTAssertTrue(groups.contains { Set(batch).isSubset(of: $0) }, "\(batch) mixes groups")
            seen += batch
        }
        XCTAssertEqual(Set(seen).count, 10)
        XCTAssertEqual(sampler.epoch, 0)
        let saved = EpochSampler.State(epoch: sampler.epoch, position: sampler.position)
        let next = sampler.nextBatch()
        XCTAssertEqual(sampler.epoch, 1)
        var resumed = try EpochSampler(count: 13, batchSize: 2, seed: 5, groups: groups.map { SampleGroup($0) },
                                       resumingAt: saved)
        XCTAssertEqual(resumed.nextBatch(), next)
        // Without groups the order is the plain permutation, as before buckets existed.
        var plain = EpochSampler(count: 13, batchSize: 2, seed: 5)
        XCTAssertEqual(plain.nextBatch(), Array(EpochSampler.permutation(count: 13, seed: 5, epoch: 0).prefix(2)))
    }

    /// Videos of 16×16, 16×24 and 24×16 (the sizes probed by ffprobe, no size columns), and one 8×8 that no bucket
    /// fits: each lands in its bucket, batches come out in the bucket's shape.
    func testCSVVideosOfMixedSizesFillTheirBuckets() throws {
        let folder = Fixtures.temporaryDirectory("kinema-buckets")
        let source = SyntheticVideos(frames: 8, imageSize: 32, count: 8, seed: 3)
        var lines = ["path,text"]
        for (index, (width, height)) in [(16, 16), (24, 16), (16, 24), (24, 16), (8, 8)].enumerated() {
            let frames = source.video(at: index).map { $0.resized(width: width, height: height) }
            try FFmpeg.writeVideo(frames, fps: 8, toPath: folder.appendingPathComponent("\(index).mp4").path)
            lines.append("\(index).mp4,\(source.caption(at: index))")
        }
        let csv = folder.appendingPathComponent("videos.csv")
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: csv)
        var reports: [String] = []
        let data = try VideoCSVDataset(csv: csv.path, frames: 8, imageSize: 16,
                                       buckets: try VideoBuckets(spec: "16x16x8,16x24x8:2,24x16x4")) { reports.append($0) }
        XCTAssertEqual(data.count, 4)
        XCTAssertTrue(reports.contains { $0.contains("no bucket fits") }, "\(reports)")
        XCTAssertEqual(data.shapes.map(\.description), ["16x16x8", "16x24x8", "24x16x4", "16x24x8"])
        XCTAssertEqual(data.sampleGroups, [SampleGroup([0]), SampleGroup([1, 3], batchSize: 2), SampleGroup([2])])
        var random = RandomStream(seed: 1)
        let wide = data.batch(indices: [1, 3], random: &random)
        XCTAssertEqual(wide.shape, [2, 3, 8, 16, 24])
        XCTAssertEqual(wide.videos.count, 2 * 3 * 8 * 16 * 24)
        XCTAssertEqual(data.batch(indices: [2], random: &random).shape, [1, 3, 4, 24, 16])
    }
}
