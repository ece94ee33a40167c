/// Element types a tensor can hold. Compute on the CPU backend happens in f32 (f64 where a test needs it);
/// bf16 and f16 are storage types with exact round-to-nearest-even conversion (see `HalfConversion.swift`).
public enum DType: String, Sendable, CaseIterable, CustomStringConvertible {
    case f32, f64, bf16, f16, i32, i64

    public var byteSize: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .bf16, .f16: return 2
        }
    }

    public var isFloatingPoint: Bool { self != .i32 && self != .i64 }

    public var description: String { rawValue }
}

/// Where a tensor's memory lives. Parsed from the CLI's `--device cpu|cuda|cuda:N`.
public enum Device: Hashable, Sendable, CustomStringConvertible {
    case cpu
    case cuda(Int)

    public init?(parsing text: String) {
        switch text {
        case "cpu": self = .cpu
        case "cuda": self = .cuda(0)
        default:
            guard text.hasPrefix("cuda:"), let index = Int(text.dropFirst(5)), index >= 0 else { return nil }
            self = .cuda(index)
        }
    }

    public var description: String {
        switch self {
        case .cpu: return "cpu"
        case .cuda(let index): return "cuda:\(index)"
        }
    }
}
