import RealModule

/// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a keyed bijection of a
/// 128-bit counter. Any element of any stream can be computed on its own, which is what makes noise identical
/// across backends and thread counts.
public struct Philox4x32: Sendable {
    public let key: (UInt32, UInt32)

    public init(seed: UInt64) {
        key = (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32))
    }

    private static let multiplier0: UInt32 = 0xD251_1F53
    private static let multiplier1: UInt32 = 0xCD9E_8D57
    private static let weyl0: UInt32 = 0x9E37_79B9
    private static let weyl1: UInt32 = 0xBB67_AE85

    /// The four 32-bit outputs for a 128-bit counter given as two 64-bit halves.
    @inline(__always)
    public func block(counter: UInt64, stream: UInt64 = 0) -> (UInt32, UInt32, UInt32, UInt32) {
        var c0 = UInt32(truncatingIfNeeded: counter), c1 = UInt32(truncatingIfNeeded: counter >> 32)
        var c2 = UInt32(truncatingIfNeeded: stream), c3 = UInt32(truncatingIfNeeded: stream >> 32)
        var k0 = key.0, k1 = key.1
        for round in 0..<10 {
            if round > 0 { k0 = k0 &+ Self.weyl0; k1 = k1 &+ Self.weyl1 }
            let product0 = UInt64(Self.multiplier0) * UInt64(c0)
            let product1 = UInt64(Self.multiplier1) * UInt64(c2)
            let hi0 = UInt32(truncatingIfNeeded: product0 >> 32), lo0 = UInt32(truncatingIfNeeded: product0)
            let hi1 = UInt32(truncatingIfNeeded: product1 >> 32), lo1 = UInt32(truncatingIfNeeded: product1)
            (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
        }
        return (c0, c1, c2, c3)
    }

    /// A uniform float in (0, 1): never 0, so its logarithm is finite, and never 1.
    @inline(__always)
    public static func unitFloat(_ bits: UInt32) -> Float {
        // For bits >> 8 = 2^24 − 1, k + 0.5 is a tie that rounds (to even) up to 2^24, giving exactly 1; clamping
        // to the float just below 1 fixes that one case and leaves every other value as it was.
        Swift.min((Float(bits >> 8) + 0.5) * (1.0 / 16_777_216.0), 0x1.fffffep-1)
    }

    /// Standard normal for element `index` of the draw starting at counter `offset`: counter offset + index/4,
    /// Box–Muller on lanes (0,1) and (2,3); even lanes take the cosine, odd lanes the sine.
    @inline(__always)
    public func normal(index: UInt64, offset: UInt64) -> Float {
        let outputs = block(counter: offset &+ index / 4)
        let lane = Int(index % 4)
        let (a, b) = lane < 2 ? (outputs.0, outputs.1) : (outputs.2, outputs.3)
        let radius = Float.sqrt(-2 * Float.log(Self.unitFloat(a)))
        let angle = 2 * Float.pi * Self.unitFloat(b)
        return lane % 2 == 0 ? radius * Float.cos(angle) : radius * Float.sin(angle)
    }

    /// A uniform float in (0, 1) for element `index` of the draw starting at `offset` (lane index % 4).
    @inline(__always)
    public func uniform(index: UInt64, offset: UInt64) -> Float {
        let outputs = block(counter: offset &+ index / 4)
        switch index % 4 {
        case 0: return Self.unitFloat(outputs.0)
        case 1: return Self.unitFloat(outputs.1)
        case 2: return Self.unitFloat(outputs.2)
        default: return Self.unitFloat(outputs.3)
        }
    }
}

/// A host-side random stream for decisions made on the CPU (which timestep, which label to drop, which image to
/// flip). Its whole state is (seed, position), so a checkpoint stores it and a resumed run draws the same values.
public struct RandomStream: Sendable, Equatable {
    public let seed: UInt64
    public private(set) var position: UInt64

    public init(seed: UInt64, position: UInt64 = 0) {
        self.seed = seed
        self.position = position
    }

    public mutating func nextUniform() -> Float {
        defer { position &+= 1 }
        return Philox4x32(seed: seed).uniform(index: position, offset: 1 << 40)
    }

    public mutating func nextInt(below bound: Int) -> Int {
        precondition(bound > 0)
        return Swift.min(Int(nextUniform() * Float(bound)), bound - 1)
    }

    /// Reserves `count` elements of the device-side normal stream and returns their offset (in Philox counters),
    /// so every noise tensor of a run is a distinct, reproducible range.
    public mutating func reserveNormals(_ count: Int) -> UInt64 {
        defer { position &+= UInt64((count + 3) / 4) }
        return position
    }
}
