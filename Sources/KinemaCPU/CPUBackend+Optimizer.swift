import KinemaTensor
import RealModule

extension CPUBackend: OptimizerOps {
    public func adamW(parameter: Tensor, gradient: Tensor, m: Tensor, v: Tensor, step: Int,
                      hyperparameters h: AdamWHyperparameters, gradScale: Double) {
        requireSameShape("adamW", parameter, gradient, m, v)
        precondition(step >= 1, "adamW: step counts from 1")
        func run<T: CPUScalar>(_: T.Type) {
            let p = parameter.elements(T.self), g = gradient.elements(T.self)
            let m1 = m.elements(T.self), m2 = v.elements(T.self)
            let beta1 = T(h.beta1), beta2 = T(h.beta2), scale = T(gradScale)
            let lr = T(h.learningRate), decay = T(1 - h.learningRate * h.weightDecay), eps = T(h.epsilon)
            // Fold both bias corrections into the step size and ε, as the fused PyTorch kernels do:
            // lr · m̂/(√v̂+ε) = (lr/c1) · m / (√v/√c2 + ε).
            let correction1 = T(1 - Double.pow(h.beta1, Double(step)))
            let sqrtCorrection2 = T(Double.sqrt(1 - Double.pow(h.beta2, Double(step))))
            let stepSize = lr / correction1
            parallelFor(parameter.count) { range in
                for i in range {
                    let grad = g[i] * scale
                    m1[i] = beta1 * m1[i] + (1 - beta1) * grad
                    m2[i] = beta2 * m2[i] + (1 - beta2) * grad * grad
                    p[i] = p[i] * decay - stepSize * m1[i] / (T.sqrt(m2[i]) / sqrtCorrection2 + eps)
                }
            }
        }
        floatSwitch(parameter.dtype, "adamW", f32: { run(Float.self) }, f64: { run(Double.self) })
    }

    public func emaUpdate(_ ema: Tensor, toward parameter: Tensor, decay: Double) {
        requireSameShape("emaUpdate", ema, parameter)
        func run<T: CPUScalar>(_: T.Type) {
            let e = ema.elements(T.self), p = parameter.elements(T.self), d = T(decay)
            parallelFor(ema.count) { range in for i in range { e[i] = d * e[i] + (1 - d) * p[i] } }
        }
        floatSwitch(ema.dtype, "emaUpdate", f32: { run(Float.self) }, f64: { run(Double.self) })
    }
}
