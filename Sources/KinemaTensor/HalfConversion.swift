/// Exact conversions between f32 and the 16-bit storage types, rounding to nearest, ties to even.

@inline(__always)
public func bf16Bits(from value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }  // keep sign, force a quiet NaN
    // Adding 0x7FFF plus the lowest kept bit rounds to nearest even; overflow into the exponent is correct
    // (it rounds up to the next binade or to infinity).
    let roundingBias = UInt32(0x7FFF) + ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: (bits &+ roundingBias) >> 16)
}

@inline(__always)
public func float(fromBF16 bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

@inline(__always)
public func f16Bits(from value: Float) -> UInt16 {
    Float16(value).bitPattern  // the hardware/stdlib conversion rounds to nearest even
}

@inline(__always)
public func float(fromF16 bits: UInt16) -> Float {
    Float(Float16(bitPattern: bits))
}
