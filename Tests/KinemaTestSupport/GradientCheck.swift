import KinemaCPU
import KinemaTensor
import XCTest

// Shared helpers for the numerical tests: deterministic random tensors, central finite differences in f64 and
// a max-norm relative comparison. Layer checks use the loss L = Σ out ⊙ R with R fixed and random, so the
// upstream gradient handed to a backward is R itself.

/// Uniform values in [−scale, scale), a pure function of the seed (53-bit doubles from Philox).
public func randomValues(_ count: Int, seed: UInt64, scale: Double = 1) -> [Double] {
    let generator = Philox4x32(seed: seed)
    return (0..<count).map { i in
        let block = generator.block(counter: UInt64(i / 2), stream: 0x7E57)
        let (high, low) = i % 2 == 0 ? (block.0, block.1) : (block.2, block.3)
        let bits = (UInt64(high) << 21) ^ UInt64(low >> 11)  // 53 random bits
        return (Double(bits) / 9_007_199_254_740_992.0 * 2 - 1) * scale
    }
}

/// A tensor of uniform values in [−scale, scale).
public func randomTensor(_ shape: [Int], dtype: DType = .f64, seed: UInt64, backend: any Backend,
                         scale: Double = 1) -> Tensor {
    backend.upload(randomValues(shape.reduce(1, *), seed: seed, scale: scale), shape: shape, dtype: dtype)
}

/// Σ out ⊙ weights in f64: the scalar loss of the gradient checks.
public func weightedSum(_ out: Tensor, _ weights: Tensor, backend: any Backend) -> Double {
    precondition(out.shape == weights.shape, "weightedSum: \(out.shape) vs \(weights.shape)")
    let a = backend.downloadDouble(out), b = backend.downloadDouble(weights)
    var total = 0.0
    for i in 0..<a.count { total += a[i] * b[i] }
    return total
}

/// Numerical derivatives of a loss with respect to some elements of a tensor.
public struct SampledGradient {
    public let indices: [Int]
    public let values: [Double]
}

/// Central differences (L(x + h) − L(x − h)) / 2h of `loss` with respect to `tensor` (f64, on the CPU), which is
/// perturbed in place and restored. Tensors larger than `maxElements` are checked on a fixed random subset.
public func numericalGradient(perturbing tensor: Tensor, step: Double = 1e-6, maxElements: Int = 50, seed: UInt64 = 11,
                              loss: () -> Double) -> SampledGradient {
    precondition(tensor.dtype == .f64 && tensor.device == .cpu, "numericalGradient perturbs f64 CPU tensors")
    var indices = Array(0..<tensor.count)
    if indices.count > maxElements {
        // Partial Fisher–Yates: the first maxElements entries become a uniform random subset.
        var random = RandomStream(seed: seed)
        for i in 0..<maxElements { indices.swapAt(i, i + random.nextInt(below: indices.count - i)) }
        indices = Array(indices.prefix(maxElements)).sorted()
    }
    let values = tensor.address.assumingMemoryBound(to: Double.self)
    let gradient = indices.map { i -> Double in
        let original = values[i]
        values[i] = original + step
        let plus = loss()
        values[i] = original - step
        let minus = loss()
        values[i] = original
        return (plus - minus) / (2 * step)
    }
    return SampledGradient(indices: indices, values: gradient)
}

/// max|a − b| / max(max|b|, tiny) ≤ relativeTolerance: one scale for the whole vector, so tiny entries are not
/// held to a relative standard that finite differences cannot meet.
public func assertClose(_ a: [Double], _ b: [Double], relativeTolerance: Double, _ message: @autoclosure () -> String = "",
                        file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "lengths differ: \(message())", file: file, line: line)
    guard a.count == b.count else { return }
    let error = zip(a, b).map { abs($0 - $1) }.max() ?? 0
    let scale = max(b.map(abs).max() ?? 0, 1e-300)
    XCTAssert(error / scale <= relativeTolerance && !a.contains(where: \.isNaN) && !b.contains(where: \.isNaN),
              "relative error \(error / scale) > \(relativeTolerance) (max |Δ| \(error), scale \(scale)) \(message())",
              file: file, line: line)
}

/// Compares an analytic gradient with the numerical one at the sampled elements.
public func assertGradient(_ analytic: Tensor, matches numeric: SampledGradient, backend: any Backend,
                           relativeTolerance: Double = 1e-6, _ message: @autoclosure () -> String = "",
                           file: StaticString = #filePath, line: UInt = #line) {
    let all = backend.downloadDouble(analytic)
    assertClose(numeric.indices.map { all[$0] }, numeric.values, relativeTolerance: relativeTolerance,
                "gradient of \(message())", file: file, line: line)
}

/// For each (name, tensor, analytic gradient): the numerical gradient of `loss` with respect to the tensor
/// must match the analytic one.
public func checkGradients(_ checks: [(name: String, tensor: Tensor, analytic: Tensor)], backend: any Backend,
                           relativeTolerance: Double = 1e-6, file: StaticString = #filePath, line: UInt = #line,
                           loss: () -> Double) {
    for check in checks {
        precondition(check.tensor.shape == check.analytic.shape, "\(check.name): gradient shape differs")
        let numeric = numericalGradient(perturbing: check.tensor, loss: loss)
        assertGradient(check.analytic, matches: numeric, backend: backend, relativeTolerance: relativeTolerance,
                       check.name, file: file, line: line)
    }
}
