import KinemaTensor

/// One cuBLASLt product shape: its descriptors and algorithm, made on first use and kept (so a training step spends
/// no host time on heuristics or descriptor set-up).
final class MatmulPlan {
    let desc: UnsafeMutableRawPointer
    let first, second, out: UnsafeMutableRawPointer
    /// The heuristic's candidates (cublasLtMatmulAlgo_t, 64 bytes each), its favourite first.
    let candidates: [[UInt8]]
    /// The algorithm in use: the heuristic's favourite, or the fastest candidate once timed (`tuned`).
    var algo: [UInt8]
    var tuned = false

    init(desc: UnsafeMutableRawPointer, first: UnsafeMutableRawPointer, second: UnsafeMutableRawPointer,
         out: UnsafeMutableRawPointer, candidates: [[UInt8]]) {
        self.desc = desc
        self.first = first
        self.second = second
        self.out = out
        self.candidates = candidates
        algo = candidates[0]
    }
}

/// One column-major cuBLASLt product D[n × m] = op(first) · op(second) over `batch` strided matrices, with its
/// dtypes and epilogue: what makes two products share a plan (and all a plan is made from).
struct MatmulKey: Hashable {
    let operands, output: DType
    let transposeFirst, transposeSecond: Bool
    let firstRows, firstCols, firstStride, secondRows, secondCols, secondStride, n, m, batch: Int
    let epilogue: Int32
}

extension CUDABackend: LinearAlgebraOps {
    /// What a product does after the multiply, in cuBLASLt's epilogue: nothing, + bias, GELU(· + bias) keeping the
    /// pre-activation in `aux`, or × GELU′(aux).
    enum Epilogue {
        case none
        case bias(Tensor)
        case geluAux(bias: Tensor?, aux: Tensor)
        case dGELU(aux: Tensor)

        var code: Int32 {
            switch self {
            case .none: return CuBLASLt.epilogueDefault
            case .bias: return CuBLASLt.epilogueBias
            case .geluAux(let bias, _): return bias == nil ? CuBLASLt.epilogueGELUAux : CuBLASLt.epilogueGELUAuxBias
            case .dGELU: return CuBLASLt.epilogueDGELU
            }
        }
    }

    /// Row-major c = alpha · op(a) · op(b) + beta · c through cuBLASLt. f32 products use exact fp32 compute (no
    /// TF32), as the f32 mode promises CPU-equal results within 1e-5; bf16 operands accumulate in f32 into a bf16
    /// or an f32 output (weight gradients).
    public func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool, into c: Tensor,
                       alpha: Double, beta: Double) {
        precondition([.f32, .f64, .bf16].contains(a.dtype), "matmul on CUDA: f32, f64 or bf16 operands, got \(a.dtype)")
        let shape = MatmulShape(a, b, transposeA: transposeA, transposeB: transposeB, output: c)
        guard shape.m > 0 && shape.n > 0 else { return }
        guard runMatmul(a, b, transposeA: transposeA, transposeB: transposeB, shape: shape, into: c, alpha: alpha,
                        beta: beta, epilogue: .none) else {
            preconditionFailure("cuBLASLt has no algorithm for \(a.dtype) \(shape.m)×\(shape.n)×\(shape.k) (batch \(shape.batch))")
        }
    }

    /// A row-major product as cuBLASLt's column-major one: a row-major X is the column-major Xᵀ, so we ask for
    /// cᵀ = op(b)ᵀ · op(a)ᵀ with b as the first operand and the flags swapped. Returns false when cuBLASLt offers no
    /// algorithm (an epilogue on an odd size, say), so the caller can compose the epilogue itself.
    private func runMatmul(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool, shape: MatmulShape,
                           into c: Tensor, alpha: Double, beta: Double, epilogue: Epilogue) -> Bool {
        // With a folded batch, a's rows as cuBLASLt sees them are all of its rows.
        let aRowsSeen = shape.batch == 1 ? a.count / shape.aColumns : a.shape[a.rank - 2]
        do {
            let key = MatmulKey(operands: a.dtype, output: c.dtype, transposeFirst: transposeB, transposeSecond: transposeA,
                                firstRows: shape.bColumns, firstCols: b.shape[b.rank - 2], firstStride: shape.strideB,
                                secondRows: shape.aColumns, secondCols: aRowsSeen, secondStride: shape.strideA,
                                n: shape.n, m: shape.m, batch: shape.batch, epilogue: epilogue.code)
            guard let plan = try matmulPlan(key) else { return false }
            if autotunesMatmuls && !plan.tuned && a.dtype == .bf16 {
                try tune(plan, a, b, into: c, alpha: alpha, beta: beta, epilogue: epilogue)
            }
            try setEpilogueOperands(epilogue, plan: plan, lt: try cublas())
            var status: Int32 = 0
            profiled("cublasLt \(a.dtype)→\(c.dtype) \(shape.m)×\(shape.n)×\(shape.k)\(shape.batch > 1 ? " ×\(shape.batch)" : "") e\(epilogue.code)",
                     host: \.matmulSeconds) {
                status = invoke(plan, algorithm: plan.algo, a, b, into: c, alpha: alpha, beta: beta)
            }
            try cublas().check(status, "cublasLtMatmul(\(shape.m)×\(shape.n)×\(shape.k), batch \(shape.batch))")
            return true
        } catch {
            fatalError("\(error)")
        }
    }

    /// Queues one cublasLtMatmul of `plan` with `algorithm` (the epilogue's operands already set); returns its status.
    private func invoke(_ plan: MatmulPlan, algorithm: [UInt8], _ a: Tensor, _ b: Tensor, into c: Tensor, alpha: Double,
                        beta: Double) -> Int32 {
        let lt = try! cublas(), workspace = try! matmulWorkspace()
        retainForConcurrentWork(a, b, c)
        // (alpha, beta) in the product's scale type: f64 for f64 products, f32 otherwise.
        var scales32 = (Float(alpha), Float(beta)), scales64 = (alpha, beta)
        return withUnsafeBytes(of: &scales32) { s32 in withUnsafeBytes(of: &scales64) { s64 in
            algorithm.withUnsafeBytes { algo in
                let scales = c.dtype == .f64 ? s64 : s32, beta = scales.baseAddress! + scales.count / 2
                return lt.matmul(cublasHandle!, plan.desc, scales.baseAddress!, deviceAddress(b), plan.first,
                                 deviceAddress(a), plan.second, beta, deviceAddress(c), plan.out, deviceAddress(c),
                                 plan.out, algo.baseAddress, deviceAddress(workspace), workspace.byteCount, stream)
            }
        } }
    }

    private static let maxTunedOutputBytes = 256 << 20
    private static let tuningRounds = 5

    /// Times the heuristic's candidates on this product's own operands and keeps the fastest: the heuristic's
    /// favourite is often not the fastest on Hopper (BENCHMARKS.md). Once per plan, at its first use (a warm-up
    /// step). A product that overwrites its output (β = 0) is timed in place, since the real call rewrites all of it
    /// (and of a GELU aux) right after; one that accumulates (β ≠ 0: weight gradients) is timed on a scratch copy of
    /// the output, so the gradient it adds to is untouched — and only up to `maxTunedOutputBytes`, above which it
    /// keeps the favourite rather than raise the peak memory by the copy (DiT-XL/2's stacked adaLN weight gradient,
    /// [195840, 1152] f32, would add 0.54 GiB).
    private func tune(_ plan: MatmulPlan, _ a: Tensor, _ b: Tensor, into c: Tensor, alpha: Double, beta: Double,
                      epilogue: Epilogue) throws {
        plan.tuned = true
        let inPlace = beta == 0
        guard plan.candidates.count > 1 && (inPlace || c.byteCount <= Self.maxTunedOutputBytes) else { return }
        let output = inPlace ? c : empty(c.shape, dtype: c.dtype)
        var trial = epilogue
        if !inPlace, case .geluAux(let bias, let aux) = epilogue {
            trial = .geluAux(bias: bias, aux: empty(aux.shape, dtype: aux.dtype))
        }
        try setEpilogueOperands(trial, plan: plan, lt: try cublas())
        // A warm-up run of each, which also drops a candidate the library refuses; then rounds that time every
        // candidate in turn (two launches each), each keeping its best, so that a clock that drifts while a plan is
        // tuned (the H100 runs at its power cap) weighs on all candidates alike. Timed once each, one after the
        // other, two runs of one binary chose different weight-gradient algorithms, 0.6 ms a step apart.
        let usable = plan.candidates.filter {
            invoke(plan, algorithm: $0, a, b, into: output, alpha: alpha, beta: beta) == 0
        }
        var best = [Double](repeating: .infinity, count: usable.count)
        for _ in 0..<Self.tuningRounds {
            for (index, algorithm) in usable.enumerated() {
                var status: Int32 = 0
                let seconds = measureSeconds {
                    for _ in 0..<2 {
                        status = invoke(plan, algorithm: algorithm, a, b, into: output, alpha: alpha, beta: beta)
                    }
                }
                if status == 0 { best[index] = Swift.min(best[index], seconds) }
            }
        }
        if let fastest = best.indices.min(by: { best[$0] < best[$1] }), best[fastest].isFinite {
            plan.algo = usable[fastest]
        }
    }

    private func setEpilogueOperands(_ epilogue: Epilogue, plan: MatmulPlan, lt: CuBLASLt) throws {
        func set(_ attribute: Int32, _ value: UInt64) throws {
            var value = value
            try lt.check(lt.matmulDescSetAttribute(plan.desc, attribute, &value, 8), "cublasLtMatmulDescSetAttribute")
        }
        switch epilogue {
        case .none: break
        case .bias(let bias):
            retainForConcurrentWork(bias)
            try set(CuBLASLt.descBiasPointer, deviceAddress(bias))
        case .geluAux(let bias, let aux):
            retainForConcurrentWork(bias, aux)
            if let bias { try set(CuBLASLt.descBiasPointer, deviceAddress(bias)) }
            try set(CuBLASLt.descAuxPointer, deviceAddress(aux))
        case .dGELU(let aux):
            retainForConcurrentWork(aux)
            try set(CuBLASLt.descAuxPointer, deviceAddress(aux))
        }
    }

    /// The plan for `key`, made on first use: descriptors, layouts and the heuristic's best algorithm (nil when
    /// there is none for this combination).
    private func matmulPlan(_ key: MatmulKey) throws -> MatmulPlan? {
        if let plan = matmulPlans[key] { return plan }
        let lt = try cublas()
        func dataType(_ dtype: DType) -> Int32 {
            switch dtype {
            case .f64: return CuBLASLt.realF64
            case .bf16: return CuBLASLt.realBF16
            default: return CuBLASLt.realF32
            }
        }
        let isDouble = key.output == .f64
        var desc: UnsafeMutableRawPointer?
        try lt.check(lt.matmulDescCreate(&desc, isDouble ? CuBLASLt.compute64F : CuBLASLt.compute32F,
                                         isDouble ? CuBLASLt.realF64 : CuBLASLt.realF32), "cublasLtMatmulDescCreate")
        var opFirst: Int32 = key.transposeFirst ? 1 : 0, opSecond: Int32 = key.transposeSecond ? 1 : 0, code = key.epilogue
        try lt.check(lt.matmulDescSetAttribute(desc!, CuBLASLt.descTransA, &opFirst, 4), "set TRANSA")
        try lt.check(lt.matmulDescSetAttribute(desc!, CuBLASLt.descTransB, &opSecond, 4), "set TRANSB")
        try lt.check(lt.matmulDescSetAttribute(desc!, CuBLASLt.descEpilogue, &code, 4), "set EPILOGUE")
        if key.epilogue == CuBLASLt.epilogueGELUAux || key.epilogue == CuBLASLt.epilogueGELUAuxBias
            || key.epilogue == CuBLASLt.epilogueDGELU {
            var leading = Int64(key.n)  // the aux matrix has the output's (column-major n × m) layout
            try lt.check(lt.matmulDescSetAttribute(desc!, CuBLASLt.descAuxLeadingDimension, &leading, 8), "set AUX_LD")
        }

        func layout(_ dtype: DType, rows: Int, cols: Int, stride: Int) throws -> UnsafeMutableRawPointer {
            var handle: UnsafeMutableRawPointer?
            try lt.check(lt.layoutCreate(&handle, dataType(dtype), UInt64(rows), UInt64(cols), Int64(rows)),
                         "cublasLtMatrixLayoutCreate")
            if key.batch > 1 {
                var count = Int32(key.batch), offset = Int64(stride)
                try lt.check(lt.layoutSetAttribute(handle!, CuBLASLt.layoutBatchCount, &count, 4), "set BATCH_COUNT")
                try lt.check(lt.layoutSetAttribute(handle!, CuBLASLt.layoutBatchStride, &offset, 8), "set BATCH_STRIDE")
            }
            return handle!
        }
        let first = try layout(key.operands, rows: key.firstRows, cols: key.firstCols, stride: key.firstStride)
        let second = try layout(key.operands, rows: key.secondRows, cols: key.secondCols, stride: key.secondStride)
        let out = try layout(key.output, rows: key.n, cols: key.m, stride: key.n * key.m)

        var preference: UnsafeMutableRawPointer?
        try lt.check(lt.preferenceCreate(&preference), "cublasLtMatmulPreferenceCreate")
        defer { _ = lt.preferenceDestroy(preference!) }
        var workspaceBytes = UInt64(try matmulWorkspace().byteCount)
        try lt.check(lt.preferenceSetAttribute(preference!, CuBLASLt.preferenceMaxWorkspaceBytes, &workspaceBytes, 8),
                     "set MAX_WORKSPACE_BYTES")
        let requested = 8
        var results = [UInt8](repeating: 0, count: requested * CuBLASLt.heuristicResultSize)
        var found: Int32 = 0
        let status = results.withUnsafeMutableBytes {
            lt.algoGetHeuristic(cublasHandle!, desc!, first, second, out, out, preference!, Int32(requested),
                                $0.baseAddress!, &found)
        }
        // Each result: the 64-byte algo, then its workspace size (8 bytes) and status (4): keep those that succeeded.
        let candidates = (0..<Int(found)).compactMap { index -> [UInt8]? in
            let start = index * CuBLASLt.heuristicResultSize
            let state = results[start + 72..<start + 76].withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
            return state == 0 ? Array(results[start..<start + 64]) : nil
        }
        guard status == 0 && found > 0 && candidates.count > 0 else {
            _ = lt.matmulDescDestroy(desc!)
            [first, second, out].forEach { _ = lt.layoutDestroy($0) }
            return nil
        }
        let plan = MatmulPlan(desc: desc!, first: first, second: second, out: out, candidates: candidates)
        matmulPlans[key] = plan
        return plan
    }

    public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, gelu: Bool) -> (y: Tensor, preActivation: Tensor?) {
        let (inFeatures, outFeatures) = (weight.shape[1], weight.shape[0])
        precondition(weight.rank == 2 && x.shape.last == inFeatures && (bias == nil || bias!.shape == [outFeatures]),
                     "linear: input \(x.shape), weight \(weight.shape), bias \(bias?.shape ?? [])")
        precondition(bias == nil || bias!.dtype == x.dtype, "linear: bias \(bias!.dtype) for \(x.dtype) input")
        let rows = x.reshaped([-1, inFeatures])
        let outShape = Array(x.shape.dropLast()) + [outFeatures]
        let y = empty([rows.shape[0], outFeatures], dtype: x.dtype)
        let aux = gelu ? empty([rows.shape[0], outFeatures], dtype: x.dtype) : nil
        let epilogue: Epilogue = aux.map { .geluAux(bias: bias, aux: $0) } ?? (bias.map { .bias($0) } ?? .none)
        let shape = MatmulShape(rows, weight, transposeA: false, transposeB: true, output: y)
        if hopperMatmul(rows, weight, transposeB: true, into: y, epilogue: epilogue) {
            return (y.reshaped(outShape), aux?.reshaped(outShape))
        }
        if shape.m > 0 && shape.n > 0 && shape.k > 0,
           runMatmul(rows, weight, transposeA: false, transposeB: true, shape: shape, into: y, alpha: 1, beta: 0,
                     epilogue: epilogue) {
            return (y.reshaped(outShape), aux?.reshaped(outShape))
        }
        // No fused algorithm for this shape (or an empty one): the same result from separate ops.
        if shape.k == 0 { fill(y, with: 0) } else if shape.m > 0 && shape.n > 0 {
            matmul(rows, weight, transposeA: false, transposeB: true, into: y, alpha: 1, beta: 0)
        }
        let z = bias.map { addBias(y, $0) } ?? y
        return gelu ? (self.gelu(z).reshaped(outShape), z.reshaped(outShape)) : (z.reshaped(outShape), nil)
    }

    public func linearInputGradient(_ dy: Tensor, weight: Tensor, geluInput: Tensor?, biasGradient: Tensor?) -> Tensor {
        let (inFeatures, outFeatures) = (weight.shape[1], weight.shape[0])
        precondition(weight.rank == 2 && dy.shape.last == outFeatures,
                     "linearInputGradient: gradient \(dy.shape) for weight \(weight.shape)")
        let rows = dy.reshaped([-1, outFeatures])
        let outShape = Array(dy.shape.dropLast()) + [inFeatures]
        precondition(geluInput == nil || geluInput!.shape == outShape,
                     "linearInputGradient: GELU input \(geluInput!.shape), want \(outShape)")
        let dx = empty([rows.shape[0], inFeatures], dtype: dy.dtype)
        let shape = MatmulShape(rows, weight, transposeA: false, transposeB: false, output: dx)
        if hopperMatmul(rows, weight, transposeB: false, into: dx, epilogue: geluInput.map { .dGELU(aux: $0) } ?? .none,
                        columnSums: biasGradient) {
            return dx.reshaped(outShape)
        }
        // The bias gradient is read only by the optimizer: its column sums run beside the product.
        if let biasGradient { concurrently { accumulateBiasGradient(rows, into: biasGradient) } }
        guard shape.m > 0 && shape.n > 0 && shape.k > 0 else {
            fill(dx, with: 0)
            return dx.reshaped(outShape)
        }
        // cuBLASLt's GELU′ is its own approximation of the derivative (about 1e-5 from ours): fused in bf16 only, so
        // the f32 mode keeps its CPU-equal results.
        if let geluInput, dy.dtype == .bf16, runMatmul(rows, weight, transposeA: false, transposeB: false, shape: shape, into: dx,
                                    alpha: 1, beta: 0, epilogue: .dGELU(aux: geluInput)) {
            return dx.reshaped(outShape)
        }
        matmul(rows, weight, transposeA: false, transposeB: false, into: dx, alpha: 1, beta: 0)
        return geluInput.map { geluBackward(dx.reshaped(outShape), x: $0) } ?? dx.reshaped(outShape)
    }

    public func addBias(_ x: Tensor, _ bias: Tensor) -> Tensor {
        let n = bias.count
        precondition(x.shape.last == n && x.dtype == bias.dtype && Self.elementTypes.contains(x.dtype),
                     "addBias on CUDA: bias \(bias.shape) \(bias.dtype) over \(x.shape) \(x.dtype)")
        let out = empty(x.shape, dtype: x.dtype)
        if x.count > 0 {
            launch("add_bias", in: "LinearAlgebra", element: x.dtype, count: x.count, [x, bias, out, Int64(n), Int64(x.count)])
        }
        return out
    }

    /// The bias gradient is f32 (a parameter gradient) whatever the element type of dy.
    public func accumulateBiasGradient(_ dy: Tensor, into accumulator: Tensor) {
        let n = accumulator.count
        precondition(dy.shape.last == n && Self.elementTypes.contains(dy.dtype) && accumulator.dtype == .f32,
                     "accumulateBiasGradient on CUDA: \(dy.shape) \(dy.dtype) into f32 \(accumulator.shape)")
        columnSums(dy, into: accumulator, rows: dy.count / Swift.max(n, 1), width: n)
    }
}
