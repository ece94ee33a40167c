import Foundation
import KinemaTensor

extension CUDABackend: OptimizerOps {
    private func requireState(_ op: String, _ tensors: Tensor...) {
        let dtype = tensors[0].dtype
        precondition(dtype == .f32 || dtype == .f64, "\(op): optimizer state must be f32 or f64, not \(dtype)")
        for t in tensors.dropFirst() {
            precondition(t.shape == tensors[0].shape && t.dtype == dtype,
                         "\(op): \(t.shape) \(t.dtype) does not match \(tensors[0].shape) \(dtype)")
        }
    }

    /// One fused kernel per step. The constants are formed on the host exactly as the CPU backend forms them
    /// (bias corrections folded into the step size and the √v divisor), then rounded to the state's precision.
    public func adamW(parameter: Tensor, gradient: Tensor, m: Tensor, v: Tensor, step: Int,
                      hyperparameters h: AdamWHyperparameters, gradScale: Double) {
        requireState("adamW", parameter, gradient, m, v)
        precondition(step >= 1, "adamW: step counts from 1")
        guard parameter.count > 0 else { return }
        let correction1 = 1 - Foundation.pow(h.beta1, Double(step))
        let sqrtCorrection2 = (1 - Foundation.pow(h.beta2, Double(step))).squareRoot()
        let decay = 1 - h.learningRate * h.weightDecay
        let n = Int64(parameter.count)
        if parameter.dtype == .f32 {
            // The CPU divides in the state's precision: Float(lr) / Float(c1).
            let stepSize = Float(h.learningRate) / Float(correction1)
            launch("adamw_f32", in: "Training", count: parameter.count,
                   [parameter, gradient, m, v, Float(h.beta1), Float(h.beta2), Float(gradScale), Float(decay),
                    stepSize, Float(sqrtCorrection2), Float(h.epsilon), n])
        } else {
            let stepSize = h.learningRate / correction1
            launch("adamw_f64", in: "Training", count: parameter.count,
                   [parameter, gradient, m, v, h.beta1, h.beta2, gradScale, decay, stepSize, sqrtCorrection2,
                    h.epsilon, n])
        }
    }

    public func emaUpdate(_ ema: Tensor, toward parameter: Tensor, decay: Double) {
        requireState("emaUpdate", ema, parameter)
        guard ema.count > 0 else { return }
        if ema.dtype == .f32 {
            launch("ema_f32", in: "Training", count: ema.count, [ema, parameter, Float(decay), Int64(ema.count)])
        } else {
            launch("ema_f64", in: "Training", count: ema.count, [ema, parameter, decay, Int64(ema.count)])
        }
    }
}
