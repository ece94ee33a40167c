/// Counter-based random numbers: element i of a draw with (seed, offset) depends on nothing else, so every backend
/// and every thread count produce the same values (see `Philox.swift`).
public protocol RandomOps: AnyObject {
    /// Standard normal values; element i uses Philox counter `offset + i / 4`, lane `i % 4`.
    func randomNormal(_ shape: [Int], dtype: DType, seed: UInt64, offset: UInt64) -> Tensor
}
