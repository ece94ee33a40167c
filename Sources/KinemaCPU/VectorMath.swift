/// f32 exp and sigmoid in plain arithmetic, no libm call, so the activation loops that use them vectorise.
/// libm's tanh, then exp, were the largest cost of a small model's step after the matrix products.

/// e^x: x = n·ln2 + r with |r| ≤ ln2/2, e^r by its degree-7 Taylor polynomial (truncation error r⁸/8! < 6e-9,
/// under half an ulp of f32), 2^n through the exponent bits. Inputs are clamped to [-87.3, 88.3], where 2^n stays
/// a normal number; beyond it e^x saturates near 0 or near 2.4e38.
@inline(__always)
func exponential(_ x: Float) -> Float {
    let clamped = Swift.min(Swift.max(x, -87.3), 88.3)
    // Adding 1.5·2²³ rounds to the nearest integer and leaves it in the low mantissa bits, with no Float → Int
    // conversion in the loop.
    let magic: Float = 12_582_912
    let shifted = clamped * 1.442_695_04 + magic
    let n = shifted - magic
    // ln 2 in two parts (the high part exact in f32) so n·ln2 is subtracted without losing r's low bits.
    let r = clamped - n * 0.693_359_375 + n * 2.121_944_4e-4
    var p: Float = 1 / 5040
    p = p * r + 1 / 720
    p = p * r + 1 / 120
    p = p * r + 1 / 24
    p = p * r + 1 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    // The low bits of shifted + 127 are n + 127 ∈ [1, 254]; moved into the exponent field they make 2^n.
    return p * Float(bitPattern: (shifted + 127).bitPattern &<< 23)
}

/// σ(x) = 1 / (1 + e^−x).
@inline(__always)
func sigmoid(_ x: Float) -> Float {
    1 / (1 + exponential(-x))
}
