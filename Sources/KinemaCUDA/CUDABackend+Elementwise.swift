import KinemaTensor

extension CUDABackend: ElementwiseOps {
    private func requireF32(_ op: String, _ tensors: Tensor...) {
        for t in tensors {
            precondition(t.dtype == .f32, "\(op): the CUDA elementwise kernels compute f32 so far, not \(t.dtype)")
        }
        for t in tensors.dropFirst() {
            precondition(t.shape == tensors[0].shape, "\(op): shapes differ: \(tensors[0].shape) vs \(t.shape)")
        }
    }

    private func binary(_ a: Tensor, _ b: Tensor, _ op: Int32, _ name: String) -> Tensor {
        requireF32(name, a, b)
        let out = empty(a.shape, dtype: .f32)
        launch("binary_f32", count: a.count, [a, b, out, op, Int64(a.count)])
        return out
    }

    public func add(_ a: Tensor, _ b: Tensor) -> Tensor { binary(a, b, 0, "add") }
    public func sub(_ a: Tensor, _ b: Tensor) -> Tensor { binary(a, b, 1, "sub") }
    public func mul(_ a: Tensor, _ b: Tensor) -> Tensor { binary(a, b, 2, "mul") }

    public func affine(_ a: Tensor, scale s: Double, shift t: Double) -> Tensor {
        requireF32("affine", a)
        let out = empty(a.shape, dtype: .f32)
        launch("affine_f32", count: a.count, [a, out, Float(s), Float(t), Int64(a.count)])
        return out
    }

    public func unary(_ op: UnaryOp, _ x: Tensor) -> Tensor {
        requireF32("unary", x)
        let code: Int32
        switch op {
        case .exp: code = 0
        case .log: code = 1
        case .sqrt: code = 2
        case .square: code = 3
        case .negate: code = 4
        case .tanh: code = 5
        case .abs: code = 6
        }
        let out = empty(x.shape, dtype: .f32)
        launch("unary_f32", count: x.count, [x, out, code, Int64(x.count)])
        return out
    }

    public func clamp(_ x: Tensor, min: Double, max: Double) -> Tensor {
        requireF32("clamp", x)
        let out = empty(x.shape, dtype: .f32)
        launch("clamp_f32", count: x.count, [x, out, Float(min), Float(max), Int64(x.count)])
        return out
    }

    public func axpy(_ alpha: Double, _ x: Tensor, _ y: Tensor) {
        requireF32("axpy", x, y)
        launch("axpy_f32", count: x.count, [Float(alpha), x, y, Int64(x.count)])
    }

    public func scaleInPlace(_ x: Tensor, by s: Double) {
        requireF32("scaleInPlace", x)
        launch("scale_f32", count: x.count, [x, Float(s), Int64(x.count)])
    }

    public func rowwiseAxpby(_ a: [Double], _ x: Tensor, _ b: [Double], _ y: Tensor) -> Tensor {
        requireF32("rowwiseAxpby", x, y)
        let rows = x.shape[0]
        precondition(a.count == rows && b.count == rows, "rowwiseAxpby: need \(rows) coefficients, got \(a.count), \(b.count)")
        let out = empty(x.shape, dtype: .f32)
        let aTensor = upload(a, shape: [rows], dtype: .f32), bTensor = upload(b, shape: [rows], dtype: .f32)
        launch("rowwise_axpby_f32", count: x.count,
               [aTensor, x, bTensor, y, out, Int64(x.count / Swift.max(rows, 1)), Int64(x.count)])
        return out
    }

    /// Fixed 8192-element blocks summed on the device in f64, the partials added here in order: the same value
    /// on every run.
    private func blockSums(_ x: Tensor, square: Bool) -> Double {
        requireF32(square ? "sumOfSquares" : "sum", x)
        guard x.count > 0 else { return 0 }
        let blocks = (x.count + 8191) / 8192
        let partial = empty([blocks], dtype: .f64)
        launch("block_sums_f32", count: x.count, blocks: blocks, [x, partial, Int32(square ? 1 : 0), Int64(x.count)])
        return downloadDouble(partial).reduce(0, +)
    }

    public func sum(_ x: Tensor) -> Double { blockSums(x, square: false) }
    public func sumOfSquares(_ x: Tensor) -> Double { blockSums(x, square: true) }
}
