import KinemaTensor
import RealModule

extension CPUBackend: OptimizerOps {
    public func adamW(master: Tensor, gradient: Tensor, m: Tensor, v: Tensor, computeCopy: Tensor?, step: Int,
                      hyperparameters h: AdamWHyperparameters, gradScale: Double, ema: (average: Tensor, decay: Double)?) {
        requireSameShape("adamW", master, gradient, m, v)
        if let ema { requireSameShape("adamW (EMA)", master, ema.average) }
        precondition(step >= 1, "adamW: step counts from 1")
        if let computeCopy { requireComputeCopy(computeCopy, of: master) }
        func run<T: CPUScalar>(_: T.Type) {
            let p = master.elements(T.self), g = gradient.elements(T.self)
            let m1 = m.elements(T.self), m2 = v.elements(T.self)
            let beta1 = T(h.beta1), beta2 = T(h.beta2), scale = T(gradScale)
            let lr = T(h.learningRate), decay = T(1 - h.learningRate * h.weightDecay), eps = T(h.epsilon)
            // Fold both bias corrections into the step size and ε, as the fused PyTorch kernels do:
            // lr · m̂/(√v̂+ε) = (lr/c1) · m / (√v/√c2 + ε).
            let correction1 = T(1 - Double.pow(h.beta1, Double(step)))
            let sqrtCorrection2 = T(Double.sqrt(1 - Double.pow(h.beta2, Double(step))))
            let stepSize = lr / correction1
            let average = ema?.average.elements(T.self), emaDecay = T(ema?.decay ?? 0)
            parallelFor(master.count) { range in
                // Tiles small enough that the compute copy is written while the tile is still in cache.
                for tile in stride(from: range.lowerBound, to: range.upperBound, by: 4096) {
                    let end = Swift.min(tile + 4096, range.upperBound)
                    for i in tile..<end {
                        let grad = g[i] * scale
                        m1[i] = beta1 * m1[i] + (1 - beta1) * grad
                        m2[i] = beta2 * m2[i] + (1 - beta2) * grad * grad
                        p[i] = p[i] * decay - stepSize * m1[i] / (T.sqrt(m2[i]) / sqrtCorrection2 + eps)
                        if let average { average[i] = emaDecay * average[i] + (1 - emaDecay) * p[i] }
                    }
                    if let computeCopy {
                        Self.round(UnsafeRawPointer(p).assumingMemoryBound(to: Float.self), tile..<end, into: computeCopy)
                    }
                }
            }
        }
        floatSwitch(master.dtype, "adamW", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    private func requireComputeCopy(_ copy: Tensor, of master: Tensor) {
        precondition(master.dtype == .f32 && copy.count == master.count && [.bf16, .f16, .f32].contains(copy.dtype),
                     "adamW: the compute copy (\(copy.shape) \(copy.dtype)) must be bf16, f16 or f32 with the element "
                     + "count of an f32 master (\(master.shape) \(master.dtype))")
    }

    /// copy[i] = source[i] rounded to nearest even in the copy's dtype, for i in `range`.
    @inline(__always)
    private static func round(_ source: UnsafePointer<Float>, _ range: Range<Int>, into copy: Tensor) {
        switch copy.dtype {
        case .bf16:
            let out = copy.elements(UInt16.self)
            for i in range { out[i] = bf16Bits(from: source[i]) }
        case .f16:
            let out = copy.elements(UInt16.self)
            for i in range { out[i] = f16Bits(from: source[i]) }
        default:
            let out = copy.elements(Float.self)
            for i in range { out[i] = source[i] }
        }
    }

    public func emaUpdate(_ ema: Tensor, toward weights: Tensor, decay: Double) {
        requireSameShape("emaUpdate", ema, weights)
        func run<T: CPUScalar>(_: T.Type) {
            let e = ema.elements(T.self), p = weights.elements(T.self), d = T(decay)
            parallelFor(ema.count) { range in for i in range { e[i] = d * e[i] + (1 - d) * p[i] } }
        }
        floatSwitch(ema.dtype, "emaUpdate", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    /// `blockedSum`'s fixed blocks over groups of four elements (each group's squares added in pairs): independent
    /// of the thread count, with a quarter of the dependent additions of `sumOfSquares`.
    public func squaredNorm(_ x: Tensor) -> Double {
        func run<T: CPUScalar>(_: T.Type) -> Double {
            let p = x.elements(T.self), count = x.count
            return blockedSum((count + 3) / 4) { group in
                let i = 4 * group
                guard i + 4 <= count else {
                    return (i..<count).reduce(0.0) { total, k in total + Double(p[k]) * Double(p[k]) }
                }
                let a = Double(p[i]), b = Double(p[i + 1]), c = Double(p[i + 2]), d = Double(p[i + 3])
                return (a * a + b * b) + (c * c + d * d)
            }
        }
        return floatSwitch(x.dtype, "squaredNorm", f32: { run(Float.self) }, f64: { run(Double.self) })
    }
}
