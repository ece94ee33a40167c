import KinemaTensor
import RealModule

extension CPUBackend: ElementwiseOps {
    /// out[i] = f(a[i], b[i]) in the tensors' compute type.
    private func zipMap<T: CPUScalar>(_ a: Tensor, _ b: Tensor, _: T.Type, _ f: (T, T) -> T) -> Tensor {
        let out = empty(a.shape, dtype: a.dtype)
        let x = a.elements(T.self), y = b.elements(T.self), z = out.elements(T.self)
        parallelFor(a.count) { range in for i in range { z[i] = f(x[i], y[i]) } }
        return out
    }

    private func map<T: CPUScalar>(_ a: Tensor, _: T.Type, _ f: (T) -> T) -> Tensor {
        let out = empty(a.shape, dtype: a.dtype)
        let x = a.elements(T.self), z = out.elements(T.self)
        parallelFor(a.count) { range in for i in range { z[i] = f(x[i]) } }
        return out
    }

    public func add(_ a: Tensor, _ b: Tensor) -> Tensor {
        requireSameShape("add", a, b)
        return floatSwitch(a.dtype, "add", f32: { zipMap(a, b, Float.self, +) }, f64: { zipMap(a, b, Double.self, +) })
    }

    public func sub(_ a: Tensor, _ b: Tensor) -> Tensor {
        requireSameShape("sub", a, b)
        return floatSwitch(a.dtype, "sub", f32: { zipMap(a, b, Float.self, -) }, f64: { zipMap(a, b, Double.self, -) })
    }

    public func mul(_ a: Tensor, _ b: Tensor) -> Tensor {
        requireSameShape("mul", a, b)
        return floatSwitch(a.dtype, "mul", f32: { zipMap(a, b, Float.self, *) }, f64: { zipMap(a, b, Double.self, *) })
    }

    public func affine(_ a: Tensor, scale s: Double, shift t: Double) -> Tensor {
        floatSwitch(a.dtype, "affine",
                    f32: { map(a, Float.self) { $0 * Float(s) + Float(t) } },
                    f64: { map(a, Double.self) { $0 * s + t } })
    }

    private static func apply<T: CPUScalar>(_ op: UnaryOp, _ x: T) -> T {
        switch op {
        case .exp: return T.exp(x)
        case .log: return T.log(x)
        case .sqrt: return T.sqrt(x)
        case .square: return x * x
        case .negate: return -x
        case .tanh: return T.tanh(x)
        case .abs: return Swift.abs(x)
        case .geluErf: return x * (1 + T.erf(x / T.sqrt(2))) / 2
        case .relu: return Swift.max(x, 0)
        case .quickGelu: return x / (1 + T.exp(-1.702 * x))
        }
    }

    public func unary(_ op: UnaryOp, _ x: Tensor) -> Tensor {
        floatSwitch(x.dtype, "unary",
                    f32: { map(x, Float.self) { Self.apply(op, $0) } },
                    f64: { map(x, Double.self) { Self.apply(op, $0) } })
    }

    public func clamp(_ x: Tensor, min: Double, max: Double) -> Tensor {
        floatSwitch(x.dtype, "clamp",
                    f32: { map(x, Float.self) { Swift.min(Swift.max($0, Float(min)), Float(max)) } },
                    f64: { map(x, Double.self) { Swift.min(Swift.max($0, min), max) } })
    }

    public func axpy(_ alpha: Double, _ x: Tensor, _ y: Tensor) {
        requireSameShape("axpy", x, y)
        func run<T: CPUScalar>(_: T.Type) {
            let a = T(alpha), source = x.elements(T.self), target = y.elements(T.self)
            parallelFor(x.count) { range in for i in range { target[i] += a * source[i] } }
        }
        floatSwitch(x.dtype, "axpy", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    public func scaleInPlace(_ x: Tensor, by s: Double) {
        func run<T: CPUScalar>(_: T.Type) {
            let factor = T(s), values = x.elements(T.self)
            parallelFor(x.count) { range in for i in range { values[i] *= factor } }
        }
        floatSwitch(x.dtype, "scaleInPlace", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    public func rowwiseAxpby(_ a: [Double], _ x: Tensor, _ b: [Double], _ y: Tensor) -> Tensor {
        requireSameShape("rowwiseAxpby", x, y)
        let rows = x.shape[0]
        precondition(a.count == rows && b.count == rows, "rowwiseAxpby: need \(rows) coefficients, got \(a.count), \(b.count)")
        let rowSize = x.count / Swift.max(rows, 1)
        func run<T: CPUScalar>(_: T.Type) -> Tensor {
            let out = empty(x.shape, dtype: x.dtype)
            let p = x.elements(T.self), q = y.elements(T.self), z = out.elements(T.self)
            parallelFor(x.count) { range in
                for i in range {
                    let row = i / rowSize
                    z[i] = T(a[row]) * p[i] + T(b[row]) * q[i]
                }
            }
            return out
        }
        return floatSwitch(x.dtype, "rowwiseAxpby", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    public func sum(_ x: Tensor) -> Double {
        floatSwitch(x.dtype, "sum",
                    f32: { let p = x.elements(Float.self); return blockedSum(x.count) { Double(p[$0]) } },
                    f64: { let p = x.elements(Double.self); return blockedSum(x.count) { p[$0] } })
    }

    public func sumOfSquares(_ x: Tensor) -> Double {
        floatSwitch(x.dtype, "sumOfSquares",
                    f32: { let p = x.elements(Float.self); return blockedSum(x.count) { Double(p[$0]) * Double(p[$0]) } },
                    f64: { let p = x.elements(Double.self); return blockedSum(x.count) { p[$0] * p[$0] } })
    }
}
