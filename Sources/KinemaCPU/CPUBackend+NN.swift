import KinemaTensor
import RealModule

/// LayerNorm, adaLN modulation, gated residuals and activations. Attention and embeddings live in their own files.
///
/// Precision: kernels compute in the tensor's dtype (f32 or f64); per-row statistics and every reduction over
/// rows are accumulated in f64, so f32 results do not drift with the number of tokens. The LayerNorm statistics
/// (`mean`, `rstd`) are stored in the compute dtype — f32 for f32 inputs as the protocol says, f64 for f64
/// inputs so the finite-difference checks see no f32 rounding.
extension CPUBackend: NNOps {
    // MARK: LayerNorm

    public func layerNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?,
                          eps: Double) -> (y: Tensor, mean: Tensor, rstd: Tensor) {
        let (y, mean, rstd) = normalizeRows("layerNorm", x, weight: weight, bias: bias, eps: eps, centered: true)
        return (y, mean!, rstd)
    }

    public func rmsNorm(_ x: Tensor, weight: Tensor?, eps: Double) -> (y: Tensor, rstd: Tensor) {
        let (y, _, rstd) = normalizeRows("rmsNorm", x, weight: weight, bias: nil, eps: eps, centered: false)
        return (y, rstd)
    }

    /// LayerNorm (`centered`: around the row mean, which it returns) or RMSNorm (around 0, no mean).
    private func normalizeRows(_ op: String, _ x: Tensor, weight: Tensor?, bias: Tensor?, eps: Double,
                               centered: Bool) -> (y: Tensor, mean: Tensor?, rstd: Tensor) {
        let width = x.shape.last ?? 0
        requireRowParameter(op, x, weight, bias)
        let rows = x.count / Swift.max(width, 1)
        func run<T: CPUScalar>(_: T.Type) -> (Tensor, Tensor?, Tensor) {
            let y = empty(x.shape, dtype: x.dtype)
            let mean = centered ? empty(Array(x.shape.dropLast()), dtype: x.dtype) : nil
            let rstd = empty(Array(x.shape.dropLast()), dtype: x.dtype)
            let source = x.elements(T.self), target = y.elements(T.self)
            let means = mean?.elements(T.self), rstds = rstd.elements(T.self)
            let w = weight?.elements(T.self), b = bias?.elements(T.self)
            parallelFor(rows, grain: Swift.max(1, 16_384 / Swift.max(width, 1))) { range in
                for row in range {
                    let base = row * width
                    // Two passes in f64 (mean, then the biased variance around it): exact enough for any width.
                    var total = 0.0
                    if centered { for j in 0..<width { total += Double(source[base + j]) } }
                    let mu = total / Double(width)
                    var squares = 0.0
                    for j in 0..<width { let d = Double(source[base + j]) - mu; squares += d * d }
                    let r = 1 / Double.sqrt(squares / Double(width) + eps)
                    means?[row] = T(mu)
                    rstds[row] = T(r)
                    let m = T(mu), s = T(r), row = source + base, out = target + base
                    // One loop per affine case keeps the inner loops branch-free (and vectorisable).
                    switch (w, b) {
                    case let (w?, b?): for j in 0..<width { out[j] = (row[j] - m) * s * w[j] + b[j] }
                    case let (w?, nil): for j in 0..<width { out[j] = (row[j] - m) * s * w[j] }
                    case let (nil, b?): for j in 0..<width { out[j] = (row[j] - m) * s + b[j] }
                    case (nil, nil): for j in 0..<width { out[j] = (row[j] - m) * s }
                    }
                }
            }
            return (y, mean, rstd)
        }
        return floatSwitch(x.dtype, op, f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    public func layerNormBackward(_ dy: Tensor, x: Tensor, weight: Tensor?, mean: Tensor, rstd: Tensor,
                                  dWeight: Tensor?, dBias: Tensor?) -> Tensor {
        normalizeRowsBackward("layerNormBackward", dy, x: x, weight: weight, mean: mean, rstd: rstd, dWeight: dWeight,
                              dBias: dBias)
    }

    public func rmsNormBackward(_ dy: Tensor, x: Tensor, weight: Tensor?, rstd: Tensor, dWeight: Tensor?) -> Tensor {
        normalizeRowsBackward("rmsNormBackward", dy, x: x, weight: weight, mean: nil, rstd: rstd, dWeight: dWeight,
                              dBias: nil)
    }

    /// The backward of `normalizeRows`; a nil mean is RMSNorm's (x̂ = x · rstd, and no mean(ĝ) term).
    private func normalizeRowsBackward(_ op: String, _ dy: Tensor, x: Tensor, weight: Tensor?, mean: Tensor?,
                                       rstd: Tensor, dWeight: Tensor?, dBias: Tensor?) -> Tensor {
        requireSameShape(op, dy, x)
        requireRowParameter(op, x, weight, dWeight, dBias)
        precondition(dWeight == nil || weight != nil, "\(op): dWeight given without a weight")
        let width = x.shape.last ?? 0, rows = x.count / Swift.max(width, 1)
        precondition(mean.map { $0.count == rows && $0.dtype == x.dtype } ?? true && rstd.count == rows
                        && rstd.dtype == x.dtype,
                     "\(op): mean \(mean?.shape ?? []) / rstd \(rstd.shape) \(rstd.dtype) do not fit \(x.shape) \(x.dtype)")
        func run<T: CPUScalar>(_: T.Type) -> Tensor {
            let dx = empty(x.shape, dtype: x.dtype)
            let g = dy.elements(T.self), source = x.elements(T.self), target = dx.elements(T.self)
            let means = mean?.elements(T.self), rstds = rstd.elements(T.self), w = weight?.elements(T.self)
            let centered = mean != nil
            // dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)) with ĝ = dy ⊙ weight, x̂ the normalised input (RMSNorm:
            // without the mean(ĝ) term).
            parallelFor(rows, grain: Swift.max(1, 16_384 / Swift.max(width, 1))) { range in
                for row in range {
                    let base = row * width, m = means?[row] ?? 0, s = rstds[row]
                    var sumG = 0.0, sumGX = 0.0
                    for j in 0..<width {
                        let gj = w.map { g[base + j] * $0[j] } ?? g[base + j]
                        sumG += Double(gj)
                        sumGX += Double(gj * (source[base + j] - m) * s)
                    }
                    let meanG = centered ? T(sumG / Double(width)) : 0, meanGX = T(sumGX / Double(width))
                    for j in 0..<width {
                        let gj = w.map { g[base + j] * $0[j] } ?? g[base + j]
                        let xhat = (source[base + j] - m) * s
                        target[base + j] = s * (gj - meanG - xhat * meanGX)
                    }
                }
            }
            if dWeight != nil || dBias != nil {
                let (sumDyX, sumDy) = columnSums(groups: 1, rows: rows, width: width) { i, row in
                    let d = Double(g[i])
                    return (d * Double((source[i] - (means?[row] ?? 0)) * rstds[row]), d)
                }
                if let dWeight { accumulate(sumDyX, into: dWeight, T.self) }
                if let dBias { accumulate(sumDy, into: dBias, T.self) }
            }
            return dx
        }
        return floatSwitch(x.dtype, op, f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    public func groupNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, groups: Int, eps: Double) -> Tensor {
        let (batch, channels) = (x.shape[0], x.shape[1]), plane = x.count / Swift.max(batch * channels, 1)
        precondition(x.rank >= 2 && groups > 0 && channels % groups == 0, "groupNorm: \(channels) channels of \(x.shape) "
                     + "in \(groups) groups")
        precondition([weight, bias].allSatisfy { $0.map { $0.shape == [channels] && $0.dtype == x.dtype } ?? true },
                     "groupNorm: weight and bias must be \(x.dtype) [\(channels)]")
        let perGroup = channels / groups, rowLength = perGroup * plane
        func run<T: CPUScalar>(_: T.Type) -> Tensor {
            let y = empty(x.shape, dtype: x.dtype)
            let source = x.elements(T.self), target = y.elements(T.self)
            let w = weight?.elements(T.self), b = bias?.elements(T.self)
            parallelFor(batch * groups, grain: 1) { range in
                for row in range {
                    let base = row * rowLength
                    // Two passes in f64 (mean, then the variance around it), as layerNorm.
                    var total = 0.0
                    for i in 0..<rowLength { total += Double(source[base + i]) }
                    let mean = total / Double(rowLength)
                    var squares = 0.0
                    for i in 0..<rowLength { let d = Double(source[base + i]) - mean; squares += d * d }
                    let rstd = 1 / (squares / Double(rowLength) + eps).squareRoot()
                    let centre = T(mean)
                    for k in 0..<perGroup {
                        let channel = (row % groups) * perGroup + k
                        let scale = T(rstd) * (w?[channel] ?? 1), shift = b?[channel] ?? 0
                        let start = base + k * plane
                        // Centred first: folding the mean into the shift would cancel where |mean| ≫ σ.
                        for i in start..<(start + plane) { target[i] = (source[i] - centre) * scale + shift }
                    }
                }
            }
            return y
        }
        return floatSwitch(x.dtype, "groupNorm", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    // MARK: adaLN modulation and gated residual

    public func modulate(_ x: Tensor, shift: Tensor, scale: Tensor) -> Tensor {
        let (batch, tokens, width) = tokenLayout("modulate", x, shift, scale)
        func run<T: CPUScalar>(_: T.Type) -> Tensor {
            let y = empty(x.shape, dtype: x.dtype)
            let source = x.elements(T.self), target = y.elements(T.self)
            let sh = shift.elements(T.self), sc = scale.elements(T.self)
            forEachRow(batch * tokens, width: width) { row in
                let base = row * width, p = (row / tokens) * width
                for j in 0..<width { target[base + j] = source[base + j] * (1 + sc[p + j]) + sh[p + j] }
            }
            return y
        }
        return floatSwitch(x.dtype, "modulate", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    public func modulateBackward(_ dy: Tensor, x: Tensor, scale: Tensor) -> (dx: Tensor, dShift: Tensor, dScale: Tensor) {
        requireSameShape("modulateBackward", dy, x)
        let (batch, tokens, width) = tokenLayout("modulateBackward", x, scale)
        func run<T: CPUScalar>(_: T.Type) -> (Tensor, Tensor, Tensor) {
            let dx = empty(x.shape, dtype: x.dtype)
            let g = dy.elements(T.self), source = x.elements(T.self), target = dx.elements(T.self)
            let sc = scale.elements(T.self)
            forEachRow(batch * tokens, width: width) { row in
                let base = row * width, p = (row / tokens) * width
                for j in 0..<width { target[base + j] = g[base + j] * (1 + sc[p + j]) }
            }
            // dShift[b, d] = Σ_n dy, dScale[b, d] = Σ_n dy · x.
            let (sumDy, sumDyX) = columnSums(groups: batch, rows: tokens, width: width) { i, _ in
                (Double(g[i]), Double(g[i]) * Double(source[i]))
            }
            return (dx, upload(sumDy, shape: scale.shape, dtype: x.dtype), upload(sumDyX, shape: scale.shape, dtype: x.dtype))
        }
        let (dx, dShift, dScale) = floatSwitch(x.dtype, "modulateBackward",
                                               f32: { run(Float.self) }, f64: { run(Double.self) })
        return (dx, dShift, dScale)
    }

    public func gatedResidual(_ x: Tensor, gate: Tensor, _ y: Tensor) -> Tensor {
        requireSameShape("gatedResidual", x, y)
        let (batch, tokens, width) = tokenLayout("gatedResidual", x, gate)
        func run<T: CPUScalar>(_: T.Type) -> Tensor {
            let out = empty(x.shape, dtype: x.dtype)
            let a = x.elements(T.self), b = y.elements(T.self), gt = gate.elements(T.self), target = out.elements(T.self)
            forEachRow(batch * tokens, width: width) { row in
                let base = row * width, p = (row / tokens) * width
                for j in 0..<width { target[base + j] = a[base + j] + gt[p + j] * b[base + j] }
            }
            return out
        }
        return floatSwitch(x.dtype, "gatedResidual", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    public func gatedResidualBackward(_ dOut: Tensor, gate: Tensor, y: Tensor,
                                      biasGradient: Tensor?) -> (dGate: Tensor, dY: Tensor) {
        requireSameShape("gatedResidualBackward", dOut, y)
        let (batch, tokens, width) = tokenLayout("gatedResidualBackward", y, gate)
        func run<T: CPUScalar>(_: T.Type) -> (Tensor, Tensor) {
            let dY = empty(y.shape, dtype: y.dtype)
            let g = dOut.elements(T.self), b = y.elements(T.self), gt = gate.elements(T.self), target = dY.elements(T.self)
            forEachRow(batch * tokens, width: width) { row in
                let base = row * width, p = (row / tokens) * width
                for j in 0..<width { target[base + j] = g[base + j] * gt[p + j] }
            }
            let (sumGY, _) = columnSums(groups: batch, rows: tokens, width: width) { i, _ in
                (Double(g[i]) * Double(b[i]), 0)
            }
            return (upload(sumGY, shape: gate.shape, dtype: y.dtype), dY)
        }
        let (dGate, dY) = floatSwitch(y.dtype, "gatedResidualBackward", f32: { run(Float.self) }, f64: { run(Double.self) })
        if let biasGradient { accumulateBiasGradient(dY.reshaped([-1, width]), into: biasGradient) }
        return (dGate, dY)
    }

    // MARK: Activations

    public func gelu(_ x: Tensor) -> Tensor {
        floatSwitch(x.dtype, "gelu", f32: {
                        // A concrete loop (no closure per element) so the compiler vectorises it.
                        let out = empty(x.shape, dtype: .f32)
                        let source = x.elements(Float.self), target = out.elements(Float.self)
                        parallelFor(x.count) { range in
                            for i in range { target[i] = source[i] * Self.geluGate(source[i]).gate }
                        }
                        return out
                    },
                    f64: { pointwise(x, Double.self) { Self.gelu($0).value } })
    }

    public func geluBackward(_ dy: Tensor, x: Tensor) -> Tensor {
        requireSameShape("geluBackward", dy, x)
        return floatSwitch(x.dtype, "geluBackward",
                           f32: {
                               let out = empty(x.shape, dtype: .f32)
                               let source = x.elements(Float.self), gradient = dy.elements(Float.self)
                               let target = out.elements(Float.self)
                               parallelFor(x.count) { range in
                                   for i in range {
                                       let v = source[i], (s, slope) = Self.geluGate(v)
                                       target[i] = gradient[i] * (s + v * s * (1 - s) * slope)
                                   }
                               }
                               return out
                           },
                           f64: { pointwise(dy, x, Double.self) { g, v in g * Self.gelu(v).derivative } })
    }

    public func silu(_ x: Tensor) -> Tensor {
        floatSwitch(x.dtype, "silu", f32: { pointwise(x, Float.self) { $0 * sigmoid($0) } },
                    f64: { pointwise(x, Double.self) { Self.silu($0).value } })
    }

    public func siluBackward(_ dy: Tensor, x: Tensor) -> Tensor {
        requireSameShape("siluBackward", dy, x)
        return floatSwitch(x.dtype, "siluBackward",
                           f32: { pointwise(dy, x, Float.self) { g, v in
                               let s = sigmoid(v)
                               return g * s * (1 + v * (1 - s))
                           } },
                           f64: { pointwise(dy, x, Double.self) { g, v in g * Self.silu(v).derivative } })
    }

    /// The f32 GELU through `exponential`: its gate σ(2u) and d(2u)/dx (see `gelu` below for the formulas).
    @inline(__always)
    static func geluGate(_ x: Float) -> (gate: Float, slope: Float) {
        let c: Float = 0.797_884_560_8, a: Float = 0.044_715
        return (sigmoid(2 * c * (x + a * x * x * x)), 2 * c * (1 + 3 * a * x * x))
    }

    /// GELU, tanh approximation: 0.5 x (1 + tanh u), u = √(2/π)(x + 0.044715 x³). Since 0.5 (1 + tanh u) = σ(2u),
    /// it is x σ(2u), with derivative σ(2u) + x σ(2u)(1 − σ(2u)) · 2√(2/π)(1 + 3 · 0.044715 x²): one exp instead of
    /// libm's tanh, which took a quarter of a small model's training step.
    @inline(__always)
    static func gelu<T: CPUScalar>(_ x: T) -> (value: T, derivative: T) {
        let c = T(0.7978845608028654)  // √(2/π)
        let a = T(0.044715)
        let s = 1 / (1 + T.exp(-2 * c * (x + a * x * x * x)))
        return (x * s, s + x * s * (1 - s) * 2 * c * (1 + 3 * a * x * x))
    }

    /// SiLU: x σ(x), derivative σ(x)(1 + x(1 − σ(x))). σ via 1/(1 + e^−x) saturates cleanly at both ends.
    @inline(__always)
    static func silu<T: CPUScalar>(_ x: T) -> (value: T, derivative: T) {
        let s = 1 / (1 + T.exp(-x))
        return (x * s, s * (1 + x * (1 - s)))
    }

    // MARK: Helpers

    private func pointwise<T: CPUScalar>(_ x: Tensor, _: T.Type, _ f: (T) -> T) -> Tensor {
        let out = empty(x.shape, dtype: x.dtype)
        let source = x.elements(T.self), target = out.elements(T.self)
        parallelFor(x.count) { range in for i in range { target[i] = f(source[i]) } }
        return out
    }

    private func pointwise<T: CPUScalar>(_ a: Tensor, _ b: Tensor, _: T.Type, _ f: (T, T) -> T) -> Tensor {
        let out = empty(a.shape, dtype: a.dtype)
        let p = a.elements(T.self), q = b.elements(T.self), target = out.elements(T.self)
        parallelFor(a.count) { range in for i in range { target[i] = f(p[i], q[i]) } }
        return out
    }

    /// Runs `body(row)` for each row of `width` elements, rows split across threads.
    @inline(__always)
    func forEachRow(_ rows: Int, width: Int, _ body: (Int) -> Void) {
        parallelFor(rows, grain: Swift.max(1, 16_384 / Swift.max(width, 1))) { range in
            for row in range { body(row) }
        }
    }

    /// For data viewed as [groups, rows, width]: sums[g·width + j] = Σ_r term(i, g·rows + r) over the element
    /// i = (g·rows + r)·width + j, two sums at once, in f64. Threads split the (g, j) columns and each column adds
    /// its rows in order, so the sums are bit-identical for every thread count.
    @inline(__always)
    func columnSums(groups: Int, rows: Int, width: Int,
                    _ term: (_ index: Int, _ row: Int) -> (Double, Double)) -> ([Double], [Double]) {
        var first = [Double](repeating: 0, count: groups * width)
        var second = [Double](repeating: 0, count: groups * width)
        first.withUnsafeMutableBufferPointer { firstBuffer in
            second.withUnsafeMutableBufferPointer { secondBuffer in
                let s1 = firstBuffer.baseAddress!, s2 = secondBuffer.baseAddress!
                // Grain keeps chunks to whole cache lines of columns; a chunk may span groups.
                parallelFor(groups * width, grain: 64) { columns in
                    var column = columns.lowerBound
                    while column < columns.upperBound {
                        let group = column / width, start = column % width
                        let end = Swift.min(width, start + (columns.upperBound - column))
                        for r in 0..<rows {
                            let row = group * rows + r
                            for j in start..<end {
                                let (a, b) = term(row * width + j, row)
                                s1[group * width + j] += a
                                s2[group * width + j] += b
                            }
                        }
                        column += end - start
                    }
                }
            }
        }
        return (first, second)
    }

    /// accumulator[j] += sums[j] (sums in f64, rounded once to the accumulator's dtype).
    private func accumulate<T: CPUScalar>(_ sums: [Double], into accumulator: Tensor, _: T.Type) {
        let target = accumulator.elements(T.self)
        for j in 0..<sums.count { target[j] += T(sums[j]) }
    }

    /// Checks that x is [B, N..., D] and every per-sample tensor is [B, D] of x's dtype; returns (B, N, D).
    private func tokenLayout(_ op: String, _ x: Tensor, _ perSample: Tensor...) -> (Int, Int, Int) {
        precondition(x.rank >= 2, "\(op): x must be [B, N..., D], got \(x.shape)")
        let batch = x.shape[0], width = x.shape[x.rank - 1]
        for t in perSample {
            precondition(t.shape == [batch, width] && t.dtype == x.dtype,
                         "\(op): per-sample tensor \(t.shape) \(t.dtype) does not fit x \(x.shape) \(x.dtype) (want [\(batch), \(width)])")
        }
        return (batch, x.count / Swift.max(batch * width, 1), width)
    }

    /// Checks that each given tensor is a [D] vector of x's dtype, D = x's last axis.
    private func requireRowParameter(_ op: String, _ x: Tensor, _ vectors: Tensor?...) {
        precondition(x.rank >= 1, "\(op): x must have rank ≥ 1")
        for case let v? in vectors {
            precondition(v.shape == [x.shape[x.rank - 1]] && v.dtype == x.dtype,
                         "\(op): \(v.shape) \(v.dtype) does not fit the last axis of \(x.shape) \(x.dtype)")
        }
    }
}
