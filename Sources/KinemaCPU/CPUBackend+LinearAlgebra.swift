import CBLAS
import KinemaTensor

extension CPUBackend: LinearAlgebraOps {
    public func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool, into c: Tensor,
                       alpha: Double, beta: Double) {
        let shape = MatmulShape(a, b, transposeA: transposeA, transposeB: transposeB, output: c)
        let (m, n, k, batch) = (shape.m, shape.n, shape.k, shape.batch)
        guard m > 0 && n > 0 else { return }
        let (strideA, strideB, strideC) = (shape.strideA, shape.strideB, shape.strideC)
        // OpenBLAS runs single-threaded (its idle threads spin in sched_yield, a fifth of a small model's step);
        // we split the work ourselves: whole products across threads when batched, else the rows of the output.
        // Either split leaves every element's sum as OpenBLAS computes it, so results don't depend on threads.
        if batch > 1 {
            parallelFor(batch, grain: Swift.max(1, 262_144 / Swift.max(1, m * n * k))) { range in
                for index in range {
                    gemm(a, b, c, transposeA: transposeA, transposeB: transposeB, rows: 0..<m, n: n, k: k,
                         offsetA: index * strideA, offsetB: index * strideB, offsetC: index * strideC, alpha: alpha, beta: beta)
                }
            }
        } else {
            parallelFor(m, grain: Swift.max(16, 262_144 / Swift.max(1, n * k))) { rows in
                gemm(a, b, c, transposeA: transposeA, transposeB: transposeB, rows: rows, n: n, k: k,
                     offsetA: 0, offsetB: 0, offsetC: 0, alpha: alpha, beta: beta)
            }
        }
    }

    /// Rows `rows` of c = alpha · op(a) op(b) + beta · c for one matrix of a batch, at the given element offsets.
    private func gemm(_ a: Tensor, _ b: Tensor, _ c: Tensor, transposeA: Bool, transposeB: Bool, rows: Range<Int>,
                      n: Int, k: Int, offsetA: Int, offsetB: Int, offsetC: Int, alpha: Double, beta: Double) {
        let rowMajor: Int32 = 101, noTrans: Int32 = 111, trans: Int32 = 112
        let ta = transposeA ? trans : noTrans, tb = transposeB ? trans : noTrans
        let lda = a.shape[a.rank - 1], ldb = b.shape[b.rank - 1]
        // Row r of op(a) starts at row r of a, or at column r when a is transposed.
        let rowOffsetA = offsetA + (transposeA ? rows.lowerBound : rows.lowerBound * lda)
        let rowOffsetC = offsetC + rows.lowerBound * n
        switch a.dtype {
        case .f32:
            cblas_sgemm(rowMajor, ta, tb, Int32(rows.count), Int32(n), Int32(k), Float(alpha),
                        a.elements(Float.self) + rowOffsetA, Int32(lda), b.elements(Float.self) + offsetB, Int32(ldb),
                        Float(beta), c.elements(Float.self) + rowOffsetC, Int32(n))
        case .f64:
            cblas_dgemm(rowMajor, ta, tb, Int32(rows.count), Int32(n), Int32(k), alpha,
                        a.elements(Double.self) + rowOffsetA, Int32(lda), b.elements(Double.self) + offsetB, Int32(ldb),
                        beta, c.elements(Double.self) + rowOffsetC, Int32(n))
        default:
            preconditionFailure("matmul: the CPU backend computes in f32 or f64, not \(a.dtype)")
        }
    }

    public func addBias(_ x: Tensor, _ bias: Tensor) -> Tensor {
        let n = bias.count
        precondition(x.shape.last == n && x.dtype == bias.dtype, "addBias: bias \(bias.shape) does not fit \(x.shape)")
        func run<T: CPUScalar>(_: T.Type) -> Tensor {
            let out = empty(x.shape, dtype: x.dtype)
            let source = x.elements(T.self), b = bias.elements(T.self), target = out.elements(T.self)
            parallelFor(x.count / n, grain: Swift.max(1, 16_384 / n)) { rows in
                for row in rows {
                    for j in 0..<n { target[row * n + j] = source[row * n + j] + b[j] }
                }
            }
            return out
        }
        return floatSwitch(x.dtype, "addBias", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    public func accumulateBiasGradient(_ dy: Tensor, into accumulator: Tensor) {
        let n = accumulator.count
        precondition(dy.shape.last == n && dy.dtype == accumulator.dtype,
                     "accumulateBiasGradient: \(dy.shape) into \(accumulator.shape)")
        func run<T: CPUScalar>(_: T.Type) {
            let source = dy.elements(T.self), target = accumulator.elements(T.self)
            let rows = dy.count / n
            // Split by columns so each sum keeps its row order whatever the thread count.
            parallelFor(n, grain: 64) { columns in
                for row in 0..<rows {
                    for j in columns { target[j] += source[row * n + j] }
                }
            }
        }
        floatSwitch(dy.dtype, "accumulateBiasGradient", f32: { run(Float.self) }, f64: { run(Double.self) })
    }
}
