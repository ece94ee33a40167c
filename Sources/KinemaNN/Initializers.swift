import KinemaTensor
import Foundation

/// Host-side initial values, a pure function of (seed, stream): element i uses Philox counter i / 4 (lane i % 4)
/// of that stream, so the values never depend on the backend or on the order layers are built in.
public enum Initializers {
    /// U(−a, a) with a = √(6 / (fanIn + fanOut)), as torch.nn.init.xavier_uniform_.
    public static func xavierUniform(shape: [Int], fanIn: Int, fanOut: Int, seed: UInt64, stream: UInt64) -> [Double] {
        precondition(fanIn + fanOut > 0, "xavierUniform: fanIn + fanOut must be positive")
        let bound = sqrt(6 / Double(fanIn + fanOut))
        return uniform(count: shape.reduce(1, *), seed: seed, stream: stream).map { (2 * $0 - 1) * bound }
    }

    /// N(0, std²) by Box–Muller on lane pairs (0, 1) and (2, 3) of each Philox block.
    public static func normal(count: Int, std: Double, seed: UInt64, stream: UInt64) -> [Double] {
        let generator = Philox4x32(seed: seed)
        return (0..<count).map { i in
            let block = generator.block(counter: UInt64(i / 4), stream: stream)
            let lane = i % 4
            let (a, b) = lane < 2 ? (block.0, block.1) : (block.2, block.3)
            let radius = sqrt(-2 * log(unit(a)))
            let angle = 2 * Double.pi * unit(b)
            return std * (lane % 2 == 0 ? radius * cos(angle) : radius * sin(angle))
        }
    }

    /// Uniform values in (0, 1).
    static func uniform(count: Int, seed: UInt64, stream: UInt64) -> [Double] {
        let generator = Philox4x32(seed: seed)
        return (0..<count).map { i in
            let block = generator.block(counter: UInt64(i / 4), stream: stream)
            switch i % 4 {
            case 0: return unit(block.0)
            case 1: return unit(block.1)
            case 2: return unit(block.2)
            default: return unit(block.3)
            }
        }
    }

    /// 32 random bits → a double in (0, 1), never 0 (Box–Muller takes its logarithm).
    private static func unit(_ bits: UInt32) -> Double {
        (Double(bits) + 0.5) / 4_294_967_296.0
    }
}
