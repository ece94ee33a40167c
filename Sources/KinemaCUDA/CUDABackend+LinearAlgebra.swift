import KinemaTensor

extension CUDABackend: LinearAlgebraOps {
    /// Row-major c = alpha · op(a) · op(b) + beta · c through cuBLASLt, which is column-major: a row-major X is the
    /// column-major Xᵀ, so we ask for cᵀ = op(b)ᵀ · op(a)ᵀ with b as the first operand and the flags swapped.
    /// f32 products use exact fp32 compute (no TF32), as the f32 mode promises CPU-equal results within 1e-5.
    public func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool, into c: Tensor,
                       alpha: Double, beta: Double) {
        precondition(a.dtype == .f32 || a.dtype == .f64, "matmul on CUDA: f32 or f64 operands, got \(a.dtype)")
        let shape = MatmulShape(a, b, transposeA: transposeA, transposeB: transposeB, output: c)
        guard shape.m > 0 && shape.n > 0 else { return }
        // With a folded batch, a's rows as cuBLASLt sees them are all of its rows.
        let aRowsSeen = shape.batch == 1 ? a.count / shape.aColumns : a.shape[a.rank - 2]
        do {
            try cublasMatmul(first: b, firstRows: shape.bColumns, firstCols: b.shape[b.rank - 2],
                             transposeFirst: transposeB, firstStride: shape.strideB,
                             second: a, secondRows: shape.aColumns, secondCols: aRowsSeen, transposeSecond: transposeA,
                             secondStride: shape.strideA, c: c, n: shape.n, m: shape.m, batch: shape.batch,
                             alpha: alpha, beta: beta)
        } catch {
            preconditionFailure("\(error)")
        }
    }

    /// One column-major product D = op(first) · op(second) (+ beta D) over `batch` strided matrices.
    private func cublasMatmul(first: Tensor, firstRows: Int, firstCols: Int, transposeFirst: Bool, firstStride: Int,
                              second: Tensor, secondRows: Int, secondCols: Int, transposeSecond: Bool,
                              secondStride: Int, c: Tensor, n: Int, m: Int, batch: Int,
                              alpha: Double, beta: Double) throws {
        let lt = try cublas()
        let isDouble = c.dtype == .f64
        let dataType = isDouble ? CuBLASLt.realF64 : CuBLASLt.realF32
        var desc: UnsafeMutableRawPointer?
        try lt.check(lt.matmulDescCreate(&desc, isDouble ? CuBLASLt.compute64F : CuBLASLt.compute32F, dataType),
                     "cublasLtMatmulDescCreate")
        defer { _ = lt.matmulDescDestroy(desc!) }
        var opFirst: Int32 = transposeFirst ? 1 : 0, opSecond: Int32 = transposeSecond ? 1 : 0
        try lt.check(lt.matmulDescSetAttribute(desc!, CuBLASLt.descTransA, &opFirst, 4), "set TRANSA")
        try lt.check(lt.matmulDescSetAttribute(desc!, CuBLASLt.descTransB, &opSecond, 4), "set TRANSB")

        func layout(rows: Int, cols: Int, stride: Int) throws -> UnsafeMutableRawPointer {
            var handle: UnsafeMutableRawPointer?
            try lt.check(lt.layoutCreate(&handle, dataType, UInt64(rows), UInt64(cols), Int64(rows)),
                         "cublasLtMatrixLayoutCreate")
            if batch > 1 {
                var count = Int32(batch), offset = Int64(stride)
                try lt.check(lt.layoutSetAttribute(handle!, CuBLASLt.layoutBatchCount, &count, 4), "set BATCH_COUNT")
                try lt.check(lt.layoutSetAttribute(handle!, CuBLASLt.layoutBatchStride, &offset, 8), "set BATCH_STRIDE")
            }
            return handle!
        }
        let firstLayout = try layout(rows: firstRows, cols: firstCols, stride: firstStride)
        let secondLayout = try layout(rows: secondRows, cols: secondCols, stride: secondStride)
        let outLayout = try layout(rows: n, cols: m, stride: n * m)
        defer { [firstLayout, secondLayout, outLayout].forEach { _ = lt.layoutDestroy($0) } }

        let workspace = try matmulWorkspace()
        var alpha32 = Float(alpha), beta32 = Float(beta), alpha64 = alpha, beta64 = beta
        let status = withUnsafeBytes(of: &alpha32) { a32 in withUnsafeBytes(of: &beta32) { b32 in
            withUnsafeBytes(of: &alpha64) { a64 in withUnsafeBytes(of: &beta64) { b64 in
                lt.matmul(cublasHandle!, desc!, isDouble ? a64.baseAddress! : a32.baseAddress!,
                          deviceAddress(first), firstLayout, deviceAddress(second), secondLayout,
                          isDouble ? b64.baseAddress! : b32.baseAddress!,
                          deviceAddress(c), outLayout, deviceAddress(c), outLayout, nil,
                          deviceAddress(workspace), workspace.byteCount, stream)
            } }
        } }
        try lt.check(status, "cublasLtMatmul(\(m)×\(n)×\(batch))")
    }

    public func addBias(_ x: Tensor, _ bias: Tensor) -> Tensor {
        let n = bias.count
        precondition(x.shape.last == n && x.dtype == .f32 && bias.dtype == .f32,
                     "addBias on CUDA: f32 bias \(bias.shape) over f32 \(x.shape)")
        let out = empty(x.shape, dtype: .f32)
        launch("add_bias_f32", in: "LinearAlgebra", count: x.count, [x, bias, out, Int64(n), Int64(x.count)])
        return out
    }

    public func accumulateBiasGradient(_ dy: Tensor, into accumulator: Tensor) {
        let n = accumulator.count
        precondition(dy.shape.last == n && dy.dtype == .f32 && accumulator.dtype == .f32,
                     "accumulateBiasGradient on CUDA: f32 \(dy.shape) into f32 \(accumulator.shape)")
        launch("accumulate_bias_gradient_f32", in: "LinearAlgebra", count: n,
               [dy, accumulator, Int64(dy.count / Swift.max(n, 1)), Int64(n)])
    }
}
