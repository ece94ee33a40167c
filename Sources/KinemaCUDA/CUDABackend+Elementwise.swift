import KinemaTensor

extension CUDABackend: ElementwiseOps {
    /// Checks that the tensors share one shape and one element type the kernels are built for (f32 or bf16,
    /// computed in f32); returns it.
    @discardableResult
    private func requireElements(_ op: String, _ tensors: Tensor...) -> DType {
        let element = tensors[0].dtype
        precondition(Self.elementTypes.contains(element), "\(op): the CUDA elementwise kernels take f32 or bf16, not \(element)")
        for t in tensors.dropFirst() {
            precondition(t.shape == tensors[0].shape && t.dtype == element,
                         "\(op): operands differ: \(tensors[0].shape) \(element) vs \(t.shape) \(t.dtype)")
        }
        return element
    }

    private func binary(_ a: Tensor, _ b: Tensor, _ op: Int32, _ name: String) -> Tensor {
        let element = requireElements(name, a, b)
        let out = empty(a.shape, dtype: element)
        launch("binary", element: element, count: a.count, [a, b, out, op, Int64(a.count)])
        return out
    }

    public func add(_ a: Tensor, _ b: Tensor) -> Tensor { binary(a, b, 0, "add") }
    public func sub(_ a: Tensor, _ b: Tensor) -> Tensor { binary(a, b, 1, "sub") }
    public func mul(_ a: Tensor, _ b: Tensor) -> Tensor { binary(a, b, 2, "mul") }

    public func affine(_ a: Tensor, scale s: Double, shift t: Double) -> Tensor {
        let element = requireElements("affine", a)
        let out = empty(a.shape, dtype: element)
        launch("affine", element: element, count: a.count, [a, out, Float(s), Float(t), Int64(a.count)])
        return out
    }

    public func unary(_ op: UnaryOp, _ x: Tensor) -> Tensor {
        let element = requireElements("unary", x)
        let code: Int32
        switch op {
        case .exp: code = 0
        case .log: code = 1
        case .sqrt: code = 2
        case .square: code = 3
        case .negate: code = 4
        case .tanh: code = 5
        case .abs: code = 6
        case .geluErf: code = 7
        case .relu: code = 8
        case .quickGelu: code = 9
        }
        let out = empty(x.shape, dtype: element)
        launch("unary", element: element, count: x.count, [x, out, code, Int64(x.count)])
        return out
    }

    public func clamp(_ x: Tensor, min: Double, max: Double) -> Tensor {
        let element = requireElements("clamp", x)
        let out = empty(x.shape, dtype: element)
        launch("clamp", element: element, count: x.count, [x, out, Float(min), Float(max), Int64(x.count)])
        return out
    }

    public func axpy(_ alpha: Double, _ x: Tensor, _ y: Tensor) {
        let element = requireElements("axpy", x, y)
        launch("axpy", element: element, count: x.count, [Float(alpha), x, y, Int64(x.count)])
    }

    public func scaleInPlace(_ x: Tensor, by s: Double) {
        let element = requireElements("scaleInPlace", x)
        launch("scale", element: element, count: x.count, [x, Float(s), Int64(x.count)])
    }

    public func rowwiseAxpby(_ a: [Double], _ x: Tensor, _ b: [Double], _ y: Tensor) -> Tensor {
        let element = requireElements("rowwiseAxpby", x, y)
        let rows = x.shape[0]
        precondition(a.count == rows && b.count == rows, "rowwiseAxpby: need \(rows) coefficients, got \(a.count), \(b.count)")
        let out = empty(x.shape, dtype: element)
        let aTensor = upload(a, shape: [rows], dtype: .f32), bTensor = upload(b, shape: [rows], dtype: .f32)
        launch("rowwise_axpby", element: element, count: x.count,
               [aTensor, x, bTensor, y, out, Int64(x.count / Swift.max(rows, 1)), Int64(x.count)])
        return out
    }

    /// Fixed 8192-element blocks summed on the device in f64, the partials added here in order: the same value
    /// on every run.
    private func blockSums(_ x: Tensor, square: Bool) -> Double {
        let element = requireElements(square ? "sumOfSquares" : "sum", x)
        guard x.count > 0 else { return 0 }
        let blocks = (x.count + 8191) / 8192
        let partial = empty([blocks], dtype: .f64)
        launch("block_sums", element: element, count: x.count, blocks: blocks, [x, partial, Int32(square ? 1 : 0), Int64(x.count)])
        return downloadDouble(partial).reduce(0, +)
    }

    public func sum(_ x: Tensor) -> Double { blockSums(x, square: false) }
    public func sumOfSquares(_ x: Tensor) -> Double { blockSums(x, square: true) }
}
