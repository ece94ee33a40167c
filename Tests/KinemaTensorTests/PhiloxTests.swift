import XCTest
import KinemaTensor

final class PhiloxTests: XCTestCase {
    /// Philox4x32-10 known answers from Random123's kat_vectors. Our `block` packs the 128-bit counter as
    /// (low32(counter), high32(counter), low32(stream), high32(stream)) and the key as (low32(seed), high32(seed)).
    func testKnownAnswerVectors() {
        let zero = Philox4x32(seed: 0).block(counter: 0, stream: 0)
        XCTAssertEqual([zero.0, zero.1, zero.2, zero.3], [0x6627_E8D5, 0xE169_C58D, 0xBC57_AC4C, 0x9B00_DBD8])

        let ones = Philox4x32(seed: .max).block(counter: .max, stream: .max)
        XCTAssertEqual([ones.0, ones.1, ones.2, ones.3], [0x408F_276D, 0x41C8_3B0E, 0xA20B_C7C6, 0x6D54_51FD])

        // Digits of pi: counter (243f6a88, 85a308d3, 13198a2e, 03707344), key (a4093822, 299f31d0).
        let pi = Philox4x32(seed: 0x299F_31D0_A409_3822).block(counter: 0x85A3_08D3_243F_6A88,
                                                                  stream: 0x0370_7344_1319_8A2E)
        XCTAssertEqual([pi.0, pi.1, pi.2, pi.3], [0xD16C_FE09, 0x94FD_CCEB, 0x5001_E420, 0x2412_6EA1])
    }

    func testKeyIsSplitFromSeed() {
        let key = Philox4x32(seed: 0x299F_31D0_A409_3822).key
        XCTAssertEqual(key.0, 0xA409_3822)
        XCTAssertEqual(key.1, 0x299F_31D0)
    }

    func testNormalsHaveUnitMoments() {
        let philox = Philox4x32(seed: 1234)
        let count = 100_000
        var sum = 0.0, sumOfSquares = 0.0
        for i in 0..<count {
            let value = Double(philox.normal(index: UInt64(i), offset: 77))
            XCTAssertTrue(value.isFinite)
            sum += value
            sumOfSquares += value * value
        }
        let mean = sum / Double(count)
        let variance = sumOfSquares / Double(count) - mean * mean
        // Standard errors are 0.0032 (mean) and 0.0045 (variance); the bounds are about 6 of them.
        XCTAssertEqual(mean, 0, accuracy: 0.02)
        XCTAssertEqual(variance, 1, accuracy: 0.03)
    }

    func testUniformsAreInOpenUnitInterval() {
        let philox = Philox4x32(seed: 99)
        var sum = 0.0
        for i in 0..<40_000 {
            let value = philox.uniform(index: UInt64(i), offset: 0)
            XCTAssertTrue(value > 0 && value < 1)
            sum += Double(value)
        }
        XCTAssertEqual(sum / 40_000, 0.5, accuracy: 0.01)
        XCTAssertGreaterThan(Philox4x32.unitFloat(0), 0)
        XCTAssertLessThan(Philox4x32.unitFloat(.max), 1)
    }

    /// `normal(index:offset:)` depends only on (seed, index, offset): any order of calls gives the same values,
    /// which is what lets threads and backends split a draw however they like.
    func testNormalIsAPureFunction() {
        let philox = Philox4x32(seed: 42)
        let indices = (0..<1_000).map(UInt64.init)
        let forward = indices.map { philox.normal(index: $0, offset: 5) }
        var shuffled: [UInt64: Float] = [:]
        var generator = SystemRandomNumberGenerator()
        for index in indices.shuffled(using: &generator) {
            shuffled[index] = philox.normal(index: index, offset: 5)
        }
        let backward = indices.reversed().map { philox.normal(index: $0, offset: 5) }.reversed()
        XCTAssertEqual(forward.map(\.bitPattern), indices.map { shuffled[$0]!.bitPattern })
        XCTAssertEqual(forward.map(\.bitPattern), backward.map(\.bitPattern))
        // A fresh generator with the same seed agrees; offset shifts the stream by whole counters (4 lanes).
        XCTAssertEqual(Philox4x32(seed: 42).normal(index: 17, offset: 5).bitPattern, forward[17].bitPattern)
        XCTAssertEqual(philox.normal(index: 13, offset: 6).bitPattern, forward[17].bitPattern)
        XCTAssertNotEqual(Philox4x32(seed: 43).normal(index: 17, offset: 5), forward[17])
    }

    func testRandomStreamResumesFromItsPosition() {
        var stream = RandomStream(seed: 7)
        _ = (0..<10).map { _ in stream.nextUniform() }
        var resumed = RandomStream(seed: 7, position: stream.position)
        XCTAssertEqual((0..<5).map { _ in stream.nextUniform() }, (0..<5).map { _ in resumed.nextUniform() })
        XCTAssertEqual(stream, resumed)
    }
}
