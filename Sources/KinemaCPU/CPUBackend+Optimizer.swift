import KinemaTensor
import RealModule

extension CPUBackend: OptimizerOps {
    public func adamW(master: Tensor, gradient: Tensor, m: Tensor, v: Tensor, computeCopy: Tensor?, step: Int,
                      hyperparameters h: AdamWHyperparameters, gradScale: Double) {
        requireSameShape("adamW", master, gradient, m, v)
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
            parallelFor(master.count) { range in
                // Tiles small enough that the compute copy is written while the tile is still in cache.
                for tile in stride(from: range.lowerBound, to: range.upperBound, by: 4096) {
                    let end = Swift.min(tile + 4096, range.upperBound)
                    for i in tile..<end {
                        let grad = g[i] * scale
                        m1[i] = beta1 * m1[i] + (1 - beta1) * grad
                        m2[i] = beta2 * m2[i] + (1 - beta2) * grad * grad
                        p[i] = p[i] * decay - stepSize * m1[i] / (T.sqrt(m2[i]) / sqrtCorrection2 + eps)
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

    /// Fixed 65,536-element blocks, each summed in f64 over four interleaved lanes (lane i % 4, then the lanes
    /// in order), the block sums then added in order: independent of the thread count.
    public func squaredNorm(_ x: Tensor) -> Double {
        func run<T: CPUScalar>(_: T.Type) -> Double {
            let p = x.elements(T.self), count = x.count, blockSize = 65_536
            let blocks = (count + blockSize - 1) / blockSize
            var partial = [Double](repeating: 0, count: blocks)
            partial.withUnsafeMutableBufferPointer { sums in
                let out = sums.baseAddress!
                parallelFor(blocks, grain: 1) { range in
                    for block in range {
                        let start = block * blockSize, end = Swift.min(count, start + blockSize)
                        var lanes = (0.0, 0.0, 0.0, 0.0)
                        var i = start
                        while i + 4 <= end {
                            let a = Double(p[i]), b = Double(p[i + 1]), c = Double(p[i + 2]), d = Double(p[i + 3])
                            lanes.0 += a * a
                            lanes.1 += b * b
                            lanes.2 += c * c
                            lanes.3 += d * d
                            i += 4
                        }
                        while i < end {
                            let a = Double(p[i])
                            lanes.0 += a * a
                            i += 1
                        }
                        out[block] = ((lanes.0 + lanes.1) + lanes.2) + lanes.3
                    }
                }
            }
            return partial.reduce(0, +)
        }
        return floatSwitch(x.dtype, "squaredNorm", f32: { run(Float.self) }, f64: { run(Double.self) })
    }
}
