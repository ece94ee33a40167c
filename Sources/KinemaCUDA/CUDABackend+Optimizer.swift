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

    /// Whether every tensor starts on a 16-byte boundary (`copy`, of 2-byte elements, on 8), so the kernels may
    /// move four elements per load. A ParameterArena's buffers always do (fresh allocations, 64-element offsets).
    private func vectorizable(_ tensors: [Tensor], copy: Tensor? = nil) -> Int32 {
        let aligned = tensors.allSatisfy { UInt(bitPattern: $0.address) % 16 == 0 }
            && copy.map { UInt(bitPattern: $0.address) % UInt(4 * $0.dtype.byteSize) == 0 } ?? true
        return aligned ? 1 : 0
    }

    /// Threads for a flat pass: one per 4-element vector, or one per element without vector loads.
    private func flatThreads(_ count: Int, vectorized: Int32) -> Int {
        vectorized == 1 ? Swift.max((count + 3) / 4, count % 4) : count
    }

    /// One fused kernel per step over the whole (flat) tensor, writing the compute copy in the same pass. The
    /// constants are formed on the host exactly as the CPU backend forms them (bias corrections folded into the
    /// step size and the √v divisor), then rounded to the state's precision.
    ///
    /// The EMA: with a second stream (`runsConcurrently`) its own pass there, which reads the updated f32 master
    /// beside the next step's forward and backward (12 bytes an element, off the step's path) instead of 8 bytes an
    /// element more in this pass, which the next step waits for. Nothing reads the average before
    /// `awaitConcurrentWork` (host reads, ExponentialMovingAverage's own reads), and the next update rewrites the
    /// master only after it (ParameterArena.settleGradients).
    public func adamW(master: Tensor, gradient: Tensor, m: Tensor, v: Tensor, computeCopy: Tensor?, step: Int,
                      hyperparameters h: AdamWHyperparameters, gradScale: Double, ema: (average: Tensor, decay: Double)?) {
        requireState("adamW", master, gradient, m, v)
        if let ema { requireState("adamW (EMA)", master, ema.average) }
        if let ema, runsConcurrently, master.dtype == .f32 {
            adamW(master: master, gradient: gradient, m: m, v: v, computeCopy: computeCopy, step: step,
                  hyperparameters: h, gradScale: gradScale, ema: nil)
            concurrently { emaUpdate(ema.average, toward: master, decay: ema.decay) }
            return
        }
        let emaArgument: any KernelArgument = ema?.average ?? UInt64(0)  // null: no EMA
        precondition(step >= 1, "adamW: step counts from 1")
        if let computeCopy {
            precondition(master.dtype == .f32 && computeCopy.count == master.count
                         && [.bf16, .f16, .f32].contains(computeCopy.dtype),
                         "adamW: the compute copy (\(computeCopy.shape) \(computeCopy.dtype)) must be bf16, f16 or f32 "
                         + "with the element count of an f32 master (\(master.shape) \(master.dtype))")
        }
        guard master.count > 0 else { return }
        let correction1 = 1 - Foundation.pow(h.beta1, Double(step))
        let sqrtCorrection2 = (1 - Foundation.pow(h.beta2, Double(step))).squareRoot()
        let decay = 1 - h.learningRate * h.weightDecay
        let n = Int64(master.count)
        if master.dtype == .f32 {
            // The CPU divides in the state's precision: Float(lr) / Float(c1).
            let stepSize = Float(h.learningRate) / Float(correction1)
            let copyType: Int32 = switch computeCopy?.dtype {
            case nil: 0
            case .f32: 1
            case .bf16: 2
            default: 3
            }
            let vectorized = vectorizable([master, gradient, m, v] + (ema.map { [$0.average] } ?? []), copy: computeCopy)
            // A null pointer when there is no copy (copyType 0: never written).
            let copyArgument: any KernelArgument = computeCopy ?? UInt64(0)
            launch("adamw_f32", in: "Training", count: flatThreads(master.count, vectorized: vectorized),
                   [master, gradient, m, v, copyArgument, copyType, Float(h.beta1), Float(h.beta2), Float(gradScale),
                    Float(decay), stepSize, Float(sqrtCorrection2), Float(h.epsilon), emaArgument, Float(ema?.decay ?? 0),
                    n, vectorized])
        } else {
            precondition(computeCopy == nil, "adamW: a compute copy needs an f32 master")
            let stepSize = h.learningRate / correction1
            launch("adamw_f64", in: "Training", count: master.count,
                   [master, gradient, m, v, h.beta1, h.beta2, gradScale, decay, stepSize, sqrtCorrection2,
                    h.epsilon, emaArgument, ema?.decay ?? 0, n])
        }
    }

    public func emaUpdate(_ ema: Tensor, toward weights: Tensor, decay: Double) {
        requireState("emaUpdate", ema, weights)
        guard ema.count > 0 else { return }
        if ema.dtype == .f32 {
            let vectorized = vectorizable([ema, weights])
            launch("ema_f32", in: "Training", count: flatThreads(ema.count, vectorized: vectorized),
                   [ema, weights, Float(decay), Int64(ema.count), vectorized])
        } else {
            launch("ema_f64", in: "Training", count: ema.count, [ema, weights, decay, Int64(ema.count)])
        }
    }

    /// Two launches: block partials over a grid whose size depends only on the element count, then one block
    /// adds them in a fixed pattern; 8 bytes come back.
    public func squaredNorm(_ x: Tensor) -> Double {
        requireState("squaredNorm", x)
        guard x.count > 0 else { return 0 }
        let vectorized = x.dtype == .f32 ? vectorizable([x]) : 0
        let threads = flatThreads(x.count, vectorized: vectorized)
        let blocks = Swift.min((threads + 255) / 256, 2048)
        let partial = empty([blocks], dtype: .f64), total = empty([1], dtype: .f64)
        if x.dtype == .f32 {
            launch("squared_norm_f32", in: "Training", count: threads, blocks: blocks,
                   [x, partial, Int64(x.count), vectorized])
        } else {
            launch("squared_norm_f64", in: "Training", count: threads, blocks: blocks, [x, partial, Int64(x.count)])
        }
        launch("squared_norm_total", in: "Training", count: 256, blocks: 1, [partial, total, Int64(blocks)])
        return downloadDouble(total)[0]
    }
}
