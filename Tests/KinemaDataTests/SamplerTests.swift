import XCTest
import KinemaTensor
@testable import KinemaData

final class SamplerTests: XCTestCase {
    func testEpochsArePermutationsCutIntoFullBatches() {
        var sampler = EpochSampler(count: 103, batchSize: 10, seed: 42)
        XCTAssertEqual(sampler.batchesPerEpoch, 10)
        for epoch in 0..<3 {
            var seen = Set<Int>()
            for _ in 0..<10 {
                let batch = sampler.nextBatch()
                XCTAssertEqual(batch.count, 10)
                XCTAssertEqual(sampler.epoch, epoch)
                seen.formUnion(batch)
            }
            XCTAssertEqual(seen.count, 100, "an epoch hands out distinct indices")
            XCTAssertTrue(seen.allSatisfy { (0..<103).contains($0) })
        }
        XCTAssertEqual(sampler.state, EpochSampler.State(epoch: 2, position: 100))
        _ = sampler.nextBatch()
        XCTAssertEqual(sampler.state, EpochSampler.State(epoch: 3, position: 10))
    }

    func testDeterministicFromSeedAndEpoch() {
        XCTAssertEqual(EpochSampler.permutation(count: 50, seed: 1, epoch: 0), EpochSampler.permutation(count: 50, seed: 1, epoch: 0))
        XCTAssertNotEqual(EpochSampler.permutation(count: 50, seed: 1, epoch: 0), EpochSampler.permutation(count: 50, seed: 1, epoch: 1))
        XCTAssertNotEqual(EpochSampler.permutation(count: 50, seed: 1, epoch: 0), EpochSampler.permutation(count: 50, seed: 2, epoch: 0))
        XCTAssertNotEqual(EpochSampler.permutation(count: 50, seed: 1, epoch: 0), Array(0..<50))
        XCTAssertEqual(EpochSampler.permutation(count: 50, seed: 9, epoch: 3).sorted(), Array(0..<50))
        // Every position is about equally likely to receive each index.
        var firstCounts = [Int](repeating: 0, count: 5)
        for epoch in 0..<5000 { firstCounts[EpochSampler.permutation(count: 5, seed: 7, epoch: epoch)[0]] += 1 }
        XCTAssertTrue(firstCounts.allSatisfy { abs($0 - 1000) < 120 }, "\(firstCounts)")
    }

    func testResumeFromEncodedStateMatchesUninterruptedRun() throws {
        var reference = EpochSampler(count: 37, batchSize: 8, seed: 2024)
        var interrupted = EpochSampler(count: 37, batchSize: 8, seed: 2024)
        for _ in 0..<7 { XCTAssertEqual(reference.nextBatch(), interrupted.nextBatch()) }
        let saved = try JSONEncoder().encode(interrupted.state)
        XCTAssertEqual(String(decoding: saved, as: UTF8.self).contains("epoch"), true)
        let state = try JSONDecoder().decode(EpochSampler.State.self, from: saved)
        var resumed = try EpochSampler(count: 37, batchSize: 8, seed: 2024, resumingAt: state)
        XCTAssertEqual(resumed.state, reference.state)
        for _ in 0..<20 { XCTAssertEqual(resumed.nextBatch(), reference.nextBatch()) }
        XCTAssertEqual(resumed.state, reference.state)
    }
}
