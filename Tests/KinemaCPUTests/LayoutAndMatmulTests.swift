import KinemaCPU
import KinemaTensor
import KinemaTestSupport
import XCTest

/// permute / narrow / concat / matmul against index-by-index loops.
final class LayoutAndMatmulTests: XCTestCase {
    let cpu = CPUBackend(threads: 2)

    func strides(_ shape: [Int]) -> [Int] {
        var result = [Int](repeating: 1, count: shape.count)
        for axis in stride(from: shape.count - 2, through: 0, by: -1) { result[axis] = result[axis + 1] * shape[axis + 1] }
        return result
    }

    /// The multi-index of flat position `flat` in `shape`.
    func unravel(_ flat: Int, _ shape: [Int]) -> [Int] {
        zip(strides(shape), shape).map { stride, size in (flat / stride) % size }
    }

    func flatIndex(_ index: [Int], _ shape: [Int]) -> Int {
        zip(index, strides(shape)).map(*).reduce(0, +)
    }

    func testPermuteMatchesLoops() {
        let cases: [([Int], [Int])] = [([3, 4], [1, 0]), ([2, 3, 5], [2, 0, 1]), ([2, 3, 4, 5], [0, 2, 1, 3]),
                                       ([2, 5, 3, 2, 3], [2, 0, 3, 1, 4]), ([2, 3, 2, 2, 3, 2], [0, 2, 4, 1, 3, 5])]
        for dtype in [DType.f32, .f64, .bf16] {
            for (shape, axes) in cases {
                let x = randomTensor(shape, dtype: dtype, seed: 1, backend: cpu)
                let source = cpu.downloadDouble(x)
                let out = cpu.permute(x, axes)
                let outShape = axes.map { shape[$0] }
                XCTAssertEqual(out.shape, outShape)
                let expected = (0..<x.count).map { flat -> Double in
                    let outIndex = unravel(flat, outShape)
                    var inIndex = [Int](repeating: 0, count: shape.count)
                    for (i, axis) in axes.enumerated() { inIndex[axis] = outIndex[i] }
                    return source[flatIndex(inIndex, shape)]
                }
                XCTAssertEqual(cpu.downloadDouble(out), expected, "permute \(shape) by \(axes) \(dtype)")
            }
        }
    }

    func testNarrowAndConcatMatchLoops() {
        let shape = [3, 5, 4]
        let x = randomTensor(shape, dtype: .f32, seed: 2, backend: cpu)
        let source = cpu.downloadDouble(x)
        for axis in 0..<3 {
            let (start, length) = (1, shape[axis] - 2)
            let out = cpu.narrow(x, axis: axis, start: start, length: length)
            var outShape = shape
            outShape[axis] = length
            let expected = (0..<out.count).map { flat -> Double in
                var index = unravel(flat, outShape)
                index[axis] += start
                return source[flatIndex(index, shape)]
            }
            XCTAssertEqual(cpu.downloadDouble(out), expected, "narrow axis \(axis)")

            // Cut the axis in three and join the pieces back: the original, exactly.
            let pieces = [cpu.narrow(x, axis: axis, start: 0, length: 1), out,
                          cpu.narrow(x, axis: axis, start: shape[axis] - 1, length: 1)]
            let joined = cpu.concat(pieces, axis: axis)
            XCTAssertEqual(joined.shape, shape)
            XCTAssertEqual(cpu.downloadDouble(joined), source, "concat axis \(axis)")
        }
        // Unequal sizes along the axis, checked element by element.
        let a = randomTensor([2, 1, 3], seed: 3, backend: cpu), b = randomTensor([2, 4, 3], seed: 4, backend: cpu)
        let joined = cpu.concat([a, b], axis: 1)
        let (av, bv, jv) = (cpu.downloadDouble(a), cpu.downloadDouble(b), cpu.downloadDouble(joined))
        for i in 0..<2 {
            for j in 0..<5 {
                for k in 0..<3 {
                    let expected = j < 1 ? av[(i * 1 + j) * 3 + k] : bv[(i * 4 + j - 1) * 3 + k]
                    XCTAssertEqual(jv[(i * 5 + j) * 3 + k], expected)
                }
            }
        }
    }

    /// c = alpha · op(a) · op(b) + beta · c for one batch entry, with a, b stored as given.
    func referenceProduct(_ a: [Double], _ b: [Double], m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool,
                          alpha: Double, beta: Double, c: [Double]) -> [Double] {
        (0..<(m * n)).map { flat in
            let (i, j) = (flat / n, flat % n)
            let dot = (0..<k).map { p in
                (transposeA ? a[p * m + i] : a[i * k + p]) * (transposeB ? b[j * k + p] : b[p * n + j])
            }.reduce(0, +)
            return alpha * dot + beta * c[flat]
        }
    }

    func testBatchedMatmulWithTransposes() {
        let (batch, m, n, k) = (3, 4, 2, 5)
        for (dtype, tolerance) in [(DType.f32, 1e-6), (.f64, 1e-14)] {
            for transposeA in [false, true] {
                for transposeB in [false, true] {
                    let a = randomTensor([batch] + (transposeA ? [k, m] : [m, k]), dtype: dtype, seed: 5, backend: cpu)
                    let b = randomTensor([batch] + (transposeB ? [n, k] : [k, n]), dtype: dtype, seed: 6, backend: cpu)
                    let c = randomTensor([batch, m, n], dtype: dtype, seed: 7, backend: cpu)
                    let (av, bv, cv) = (cpu.downloadDouble(a), cpu.downloadDouble(b), cpu.downloadDouble(c))
                    cpu.matmul(a, b, transposeA: transposeA, transposeB: transposeB, into: c, alpha: 0.5, beta: 2)
                    var expected = [Double]()
                    for entry in 0..<batch {
                        expected += referenceProduct(Array(av[(entry * m * k)..<((entry + 1) * m * k)]),
                                                     Array(bv[(entry * k * n)..<((entry + 1) * k * n)]),
                                                     m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB,
                                                     alpha: 0.5, beta: 2,
                                                     c: Array(cv[(entry * m * n)..<((entry + 1) * m * n)]))
                    }
                    assertClose(cpu.downloadDouble(c), expected, relativeTolerance: tolerance,
                                "matmul \(dtype) tA \(transposeA) tB \(transposeB)")
                }
            }
        }
    }

    func testMatmulFoldsLeadingAxesForRankTwoWeight() {
        // a [2, 3, k] × b [k, n] (or bᵀ with b [n, k]): every row of every batch entry meets the same matrix.
        let (m, n, k) = (6, 4, 5)
        for transposeB in [false, true] {
            let a = randomTensor([2, 3, k], seed: 8, backend: cpu)
            let b = randomTensor(transposeB ? [n, k] : [k, n], seed: 9, backend: cpu)
            let out = cpu.matmul(a, b, transposeB: transposeB)
            XCTAssertEqual(out.shape, [2, 3, n])
            let expected = referenceProduct(cpu.downloadDouble(a), cpu.downloadDouble(b), m: m, n: n, k: k,
                                            transposeA: false, transposeB: transposeB, alpha: 1, beta: 0,
                                            c: [Double](repeating: 0, count: m * n))
            assertClose(cpu.downloadDouble(out), expected, relativeTolerance: 1e-14, "folded matmul tB \(transposeB)")
        }
    }

    /// Rank-8 permutes (a 3D patch grid) against index arithmetic written out; the plan drops unit axes and merges
    /// axes that stay neighbours, so an image patchify in the 3D form loops over four axes.
    func testRankEightPermuteAndPlanMerging() {
        let cpu = CPUBackend(threads: 2)
        let shape = [2, 3, 2, 2, 3, 2, 2, 2], axes = [0, 2, 4, 6, 1, 3, 5, 7]
        let values = (0..<shape.reduce(1, *)).map(Double.init)
        let out = cpu.downloadDouble(cpu.permute(cpu.upload(values, shape: shape, dtype: .f64), axes))
        var strides = [Int](repeating: 1, count: 8)
        for axis in stride(from: 6, through: 0, by: -1) { strides[axis] = strides[axis + 1] * shape[axis + 1] }
        let outShape = axes.map { shape[$0] }
        var expected: [Double] = []
        for index in 0..<values.count {
            var rest = index, offset = 0
            for position in stride(from: 7, through: 0, by: -1) {
                offset += (rest % outShape[position]) * strides[axes[position]]
                rest /= outShape[position]
            }
            expected.append(values[offset])
        }
        XCTAssertEqual(out, expected)
        let image = PermutePlan(shape: [4, 3, 1, 1, 5, 2, 6, 2], axes: axes)
        XCTAssertEqual(image.outputShape, [4, 1, 5, 6, 3, 1, 2, 2])
        XCTAssertEqual(image.extents, [4, 5, 6, 3, 2, 2])
        XCTAssertEqual(PermutePlan(shape: [2, 3, 4], axes: [0, 1, 2]).extents, [24])
    }
}
