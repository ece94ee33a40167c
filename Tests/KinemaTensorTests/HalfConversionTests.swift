import XCTest
import KinemaTensor

final class HalfConversionTests: XCTestCase {
    private func bf16(_ floatBits: UInt32) -> UInt16 { bf16Bits(from: Float(bitPattern: floatBits)) }
    private func f16(_ floatBits: UInt32) -> UInt16 { f16Bits(from: Float(bitPattern: floatBits)) }

    // MARK: bf16 (keeps the top 16 bits of an f32; the low 16 decide the rounding)

    func testBF16RoundsTiesToEven() {
        XCTAssertEqual(bf16(0x3F80_8000), 0x3F80)  // tie, kept bit even: stays
        XCTAssertEqual(bf16(0x3F81_8000), 0x3F82)  // tie, kept bit odd: up to even
        XCTAssertEqual(bf16(0x3F80_8001), 0x3F81)  // above the tie: up
        XCTAssertEqual(bf16(0x3F80_7FFF), 0x3F80)  // below the tie: down
        XCTAssertEqual(bf16(0x3F80_0000), 0x3F80)  // exact
        XCTAssertEqual(bf16(0x3FFF_8000), 0x4000)  // rounding carries into the exponent
    }

    func testBF16NegativeValuesRoundByMagnitude() {
        XCTAssertEqual(bf16(0xBF80_8000), 0xBF80)
        XCTAssertEqual(bf16(0xBF81_8000), 0xBF82)
        XCTAssertEqual(bf16(0xBF80_8001), 0xBF81)
        XCTAssertEqual(bf16Bits(from: -0.0), 0x8000)
        XCTAssertEqual(float(fromBF16: 0xC000), -2)
    }

    func testBF16Overflow() {
        XCTAssertEqual(bf16Bits(from: .greatestFiniteMagnitude), 0x7F80)  // rounds past the largest bf16 to inf
        XCTAssertEqual(bf16Bits(from: -.greatestFiniteMagnitude), 0xFF80)
        XCTAssertEqual(bf16(0x7F7F_7FFF), 0x7F7F)  // just below the tie with inf: largest finite bf16
        XCTAssertEqual(bf16Bits(from: .infinity), 0x7F80)
        XCTAssertEqual(bf16Bits(from: -.infinity), 0xFF80)
    }

    func testBF16NaNStaysNaN() {
        // A NaN whose payload is only in the low 16 bits would truncate to infinity without the quiet bit.
        for bits: UInt32 in [0x7FC0_0000, 0x7F80_0001, 0xFF80_0001, 0x7FFF_FFFF, 0x7F80_FFFF] {
            let result = bf16(bits)
            XCTAssertTrue(float(fromBF16: result).isNaN, String(bits, radix: 16))
            XCTAssertEqual(result >> 15, UInt16(bits >> 31), "sign of NaN \(String(bits, radix: 16)) kept")
        }
    }

    func testBF16Subnormals() {
        XCTAssertEqual(bf16(0x0001_0000), 0x0001)  // exact smallest bf16 subnormal
        XCTAssertEqual(float(fromBF16: 0x0001), Float(bitPattern: 0x0001_0000))
        XCTAssertEqual(bf16(0x0000_0001), 0x0000)  // smallest f32 subnormal rounds to zero
        XCTAssertEqual(bf16(0x0000_8000), 0x0000)  // tie between 0 and the smallest subnormal: even (0)
        XCTAssertEqual(bf16(0x0001_8000), 0x0002)  // tie between 1 and 2 ulps: even (2)
        XCTAssertEqual(bf16(0x007F_FFFF), 0x0080)  // largest subnormal rounds up to the smallest normal
        XCTAssertEqual(bf16(0x8001_8000), 0x8002)
    }

    func testEveryBF16PatternRoundTrips() {
        for bits in UInt16.min...UInt16.max {
            let value = float(fromBF16: bits)
            if value.isNaN {
                XCTAssertTrue(float(fromBF16: bf16Bits(from: value)).isNaN)
            } else if bf16Bits(from: value) != bits {
                XCTFail("bf16 0x\(String(bits, radix: 16)) → \(value) → 0x\(String(bf16Bits(from: value), radix: 16))")
            }
        }
    }

    // MARK: f16 (1 sign, 5 exponent, 10 mantissa bits: f32 mantissa bit 12 is the tie bit)

    func testF16RoundsTiesToEven() {
        XCTAssertEqual(f16(0x3F80_1000), 0x3C00)  // 1 + 2^-11: tie, stays at 1
        XCTAssertEqual(f16(0x3F80_3000), 0x3C02)  // 1 + 3·2^-11: tie, up to even
        XCTAssertEqual(f16(0x3F80_1001), 0x3C01)  // above the tie
        XCTAssertEqual(f16(0x3F80_0FFF), 0x3C00)  // below the tie
        XCTAssertEqual(f16(0xBF80_3000), 0xBC02)  // negative tie
        XCTAssertEqual(f16Bits(from: -0.0), 0x8000)
    }

    func testF16Overflow() {
        XCTAssertEqual(f16Bits(from: 65504), 0x7BFF)  // largest finite f16
        XCTAssertEqual(f16Bits(from: 65519), 0x7BFF)  // below the tie with 65536: stays finite
        XCTAssertEqual(f16Bits(from: 65520), 0x7C00)  // the tie: rounds to even, which is inf
        XCTAssertEqual(f16Bits(from: -65520), 0xFC00)
        XCTAssertEqual(f16Bits(from: 1e10), 0x7C00)
        XCTAssertEqual(f16Bits(from: .infinity), 0x7C00)
    }

    func testF16NaNStaysNaN() {
        for bits: UInt32 in [0x7FC0_0000, 0x7F80_0001, 0xFF80_0001, 0x7F80_1000] {
            XCTAssertTrue(float(fromF16: f16(bits)).isNaN, String(bits, radix: 16))
        }
    }

    func testF16Subnormals() {
        let tiny = Float(sign: .plus, exponent: -24, significand: 1)  // smallest f16 subnormal
        XCTAssertEqual(f16Bits(from: tiny), 0x0001)
        XCTAssertEqual(float(fromF16: 0x0001), tiny)
        XCTAssertEqual(f16Bits(from: tiny / 2), 0x0000)      // tie between 0 and 1 ulp: even (0)
        XCTAssertEqual(f16Bits(from: tiny * 1.5), 0x0002)    // tie between 1 and 2 ulps: even (2)
        XCTAssertEqual(f16Bits(from: tiny * 0.75), 0x0001)   // above the tie
        XCTAssertEqual(f16Bits(from: -tiny * 1.5), 0x8002)
        XCTAssertEqual(f16Bits(from: Float.leastNonzeroMagnitude), 0x0000)
        XCTAssertEqual(float(fromF16: 0x03FF), Float(sign: .plus, exponent: -14, significand: 1023.0 / 1024))
    }

    func testEveryF16PatternRoundTrips() {
        for bits in UInt16.min...UInt16.max {
            let value = float(fromF16: bits)
            if value.isNaN {
                XCTAssertTrue(float(fromF16: f16Bits(from: value)).isNaN, String(bits, radix: 16))
            } else if f16Bits(from: value) != bits {
                XCTFail("f16 0x\(String(bits, radix: 16)) → \(value) → 0x\(String(f16Bits(from: value), radix: 16))")
            }
        }
    }
}
