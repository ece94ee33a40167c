import Dispatch
import KinemaModels
import KinemaNN
import KinemaTensor

extension GPUCheck {
    /// The flat optimizer passes (AdamW with its compute copy, EMA, gradient norm) against the CPU backend, over
    /// sizes that are no multiple of a block or of a vector, aligned (vector loads) and misaligned (scalar path);
    /// a DiT's parameter arena on both backends; and their speed at DiT-XL/2 size.
    func checkOptimizer() {
        let h = AdamWHyperparameters(learningRate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.1)
        for count in [1, 3, 1000, 4099, 65_537, 1_000_003] {
            for copyType in [nil, DType.bf16, .f16, .f32] {
                checkAdamW(count: count, copyType: copyType, misaligned: false, h)
            }
            checkAdamW(count: count, copyType: .bf16, misaligned: true, h)
            checkEMA(count: count, misaligned: false)
            checkEMA(count: count, misaligned: true)
            checkSquaredNorm(count: count, misaligned: false)
            checkSquaredNorm(count: count, misaligned: true)
        }
        checkArena(h)
        timeOptimizer(count: (try? DiTConfig.named("DiT-XL/2").parameterCount) ?? 675_000_000, h)
    }

    /// A fresh tensor of `count` elements; misaligned ones start one element into their buffer (no vector loads).
    private func fresh(_ count: Int, misaligned: Bool, positive: Bool = false,
                       scale: Float = 1) -> (cpu: Tensor, gpu: Tensor) {
        let shift = misaligned ? 1 : 0
        let (c, g) = pair([count + shift], positive: positive, scale: scale)
        func view(_ t: Tensor) -> Tensor { Tensor(shape: [count], dtype: t.dtype, buffer: t.buffer, offset: shift) }
        return (view(c), view(g))
    }

    private func checkAdamW(count: Int, copyType: DType?, misaligned: Bool, _ h: AdamWHyperparameters) {
        let tag = "n=\(count) copy \(copyType.map { "\($0)" } ?? "none")\(misaligned ? " misaligned" : "")"
        let (p, gp) = fresh(count, misaligned: misaligned), (m, gm) = fresh(count, misaligned: misaligned, scale: 0.1)
        let (v, gv) = fresh(count, misaligned: misaligned, positive: true, scale: 0.01)
        let copies = copyType.map { dtype -> (cpu: Tensor, gpu: Tensor) in
            let shift = misaligned ? 4 : 0  // a 16-bit copy starting 8 bytes in still allows its 8-byte stores
            let c = cpu.empty([count + shift], dtype: dtype), g = gpu.empty([count + shift], dtype: dtype)
            return (Tensor(shape: [count], dtype: dtype, buffer: c.buffer, offset: shift),
                    Tensor(shape: [count], dtype: dtype, buffer: g.buffer, offset: shift))
        }
        for step in 1...4 {
            let (g, gg) = fresh(count, misaligned: misaligned, scale: 2)
            let scale = step % 2 == 0 ? 0.37 : 1.0 / 3.0
            cpu.adamW(master: p, gradient: g, m: m, v: v, computeCopy: copies?.cpu, step: step, hyperparameters: h,
                      gradScale: scale)
            gpu.adamW(master: gp, gradient: gg, m: gm, v: gv, computeCopy: copies?.gpu, step: step, hyperparameters: h,
                      gradScale: scale)
        }
        check("adamW 4 steps master \(tag)", gpu.download(gp), cpu.download(p))
        check("adamW 4 steps m \(tag)", gpu.download(gm), cpu.download(m))
        check("adamW 4 steps v \(tag)", gpu.download(gv), cpu.download(v))
        if let (copy, gcopy) = copies {
            // Exactly the CPU's rounding of the GPU's master, and the CPU's own copy within the copy's precision.
            let gpuMaster = cpu.upload(gpu.download(gp), shape: [count], dtype: .f32)
            check("adamW copy = rounded master \(tag)", gpu.download(gcopy),
                  cpu.download(cpu.cast(gpuMaster, to: copy.dtype)), tolerance: 0)
            check("adamW copy vs CPU copy \(tag)", gpu.download(gcopy), cpu.download(copy),
                  tolerance: copy.dtype == .f32 ? 1e-6 : 1e-2)
        }
    }

    private func checkEMA(count: Int, misaligned: Bool) {
        let (p, gp) = fresh(count, misaligned: misaligned), (e, ge) = fresh(count, misaligned: misaligned)
        for decay in [0.999, 0.9, 0.5] {
            cpu.emaUpdate(e, toward: p, decay: decay)
            gpu.emaUpdate(ge, toward: gp, decay: decay)
        }
        check("emaUpdate n=\(count)\(misaligned ? " misaligned" : "")", gpu.download(ge), cpu.download(e))
    }

    private func checkSquaredNorm(count: Int, misaligned: Bool) {
        let (x, gx) = fresh(count, misaligned: misaligned)
        let ours = gpu.squaredNorm(gx), again = gpu.squaredNorm(gx), reference = cpu.squaredNorm(x)
        let error = abs(ours - reference) / reference
        record("squaredNorm n=\(count)\(misaligned ? " misaligned" : "")", error <= 1e-9 && ours == again,
               String(format: "relative error %.2e, repeat %@", error, ours == again ? "identical" : "DIFFERS"))
    }

    /// A bf16 DiT's arena on both backends: exact f32 master and rounded values at construction, then AdamW and
    /// the EMA over the flat buffers with the same gradients.
    private func checkArena(_ h: AdamWHyperparameters) {
        do {
            let config = DiTConfig(inputSize: 8, patchSize: 2, hiddenSize: 64, depth: 2, numHeads: 4, numClasses: 10)
            let c = try DiT(config: config, backend: cpu, dtype: .bf16, seed: 3).arena
            let g = try DiT(config: config, backend: gpu, dtype: .bf16, seed: 3).arena
            let reference = try DiT(config: config, backend: cpu, seed: 3)
            let f32Weights = reference.parameters.flatMap { cpu.download($0.value) }
            let masterValues = c.parameters.flatMap { cpu.download($0.weights) }
            record("arena bf16 master = f32 initial weights", masterValues == f32Weights,
                   "\(c.parameters.count) tensors, \(c.count) elements")
            check("arena master CPU vs GPU", gpu.download(g.master!), cpu.download(c.master!), tolerance: 0)
            check("arena values CPU vs GPU", gpu.download(g.values), cpu.download(c.values), tolerance: 0)
            let (cm, gm) = (cpu.zeros([c.count], dtype: .f32), gpu.zeros([g.count], dtype: .f32))
            let (cv, gv) = (cpu.zeros([c.count], dtype: .f32), gpu.zeros([g.count], dtype: .f32))
            let (ce, ge) = (cpu.clone(c.weights), gpu.clone(g.weights))
            for step in 1...3 {
                // Gradients only where the parameters are (the padding stays zero, as a backward leaves it).
                c.zeroGradients()
                g.zeroGradients()
                for index in c.parameters.indices {
                    let (values, _) = pair(c.parameters[index].value.shape, scale: 0.1)
                    cpu.copy(values, into: c.parameters[index].gradient)
                    gpu.copy(gpu.upload(cpu.download(values), shape: values.shape, dtype: .f32),
                             into: g.parameters[index].gradient)
                }
                let cNorm = cpu.squaredNorm(c.gradients), gNorm = gpu.squaredNorm(g.gradients)
                let scale = min(1, 0.5 / (cNorm.squareRoot() + 1e-6))
                if step == 1 {
                    record("arena gradient norm", abs(gNorm - cNorm) <= 1e-9 * cNorm, "CPU \(cNorm) GPU \(gNorm)")
                }
                cpu.adamW(master: c.weights, gradient: c.gradients, m: cm, v: cv, computeCopy: c.computeCopy,
                          step: step, hyperparameters: h, gradScale: scale)
                cpu.emaUpdate(ce, toward: c.weights, decay: 0.9)
                // The GPU takes the EMA with its AdamW, as the trainer runs it: in its own pass on the second stream
                // (steps 1 and 3; the next step's gradients and the download below wait for it), and fused into
                // AdamW's pass in step 2, as without a second stream (KINEMA_CONCURRENT_GRADIENTS=0).
                let concurrent = gpu.runsConcurrently
                gpu.runsConcurrently = concurrent && step != 2
                gpu.adamW(master: g.weights, gradient: g.gradients, m: gm, v: gv, computeCopy: g.computeCopy,
                          step: step, hyperparameters: h, gradScale: scale, ema: (ge, 0.9))
                gpu.runsConcurrently = concurrent
            }
            check("arena AdamW master", gpu.download(g.master!), cpu.download(c.master!))
            check("arena AdamW bf16 values = rounded master", gpu.download(g.values),
                  cpu.download(cpu.cast(cpu.upload(gpu.download(g.master!), shape: [g.count], dtype: .f32), to: .bf16)),
                  tolerance: 0)
            check("arena EMA (on the second stream and fused into AdamW)", gpu.download(ge), cpu.download(ce))
            let master = gpu.download(g.master!), alignment = ParameterArena.alignment
            let padding = zip(g.offsets, g.parameters).flatMap { offset, parameter in
                let end = offset + parameter.value.count
                return master[end..<((end + alignment - 1) / alignment * alignment)]
            }
            record("arena padding stays zero", padding.allSatisfy { $0 == 0 }, "\(padding.count) padding elements")
        } catch {
            record("arena", false, "\(error)")
        }
    }

    /// Milliseconds and achieved bandwidth of each flat pass over `count` elements (median of 5 after a warm-up).
    private func timeOptimizer(count: Int, _ h: AdamWHyperparameters) {
        let master = gpu.zeros([count], dtype: .f32), gradient = gpu.zeros([count], dtype: .f32)
        let m = gpu.zeros([count], dtype: .f32), v = gpu.zeros([count], dtype: .f32)
        let copy = gpu.zeros([count], dtype: .bf16), ema = gpu.zeros([count], dtype: .f32)
        func time(_ name: String, bytesPerElement: Int, _ body: () -> Void) {
            body()
            gpu.synchronize()
            var times: [Double] = []
            for _ in 0..<5 {
                let start = DispatchTime.now().uptimeNanoseconds
                body()
                gpu.synchronize()
                times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
            let seconds = times.sorted()[2]
            record("time \(name) n=\(count)", true, String(format: "%.2f ms, %.0f GB/s", seconds * 1e3,
                                                            Double(count * bytesPerElement) / seconds / 1e9))
        }
        var step = 0
        // Read master, gradient, m, v; write master, m, v and the bf16 copy.
        time("adamW + bf16 copy", bytesPerElement: 30) {
            step += 1
            gpu.adamW(master: master, gradient: gradient, m: m, v: v, computeCopy: copy, step: step,
                      hyperparameters: h, gradScale: 1)
        }
        time("emaUpdate", bytesPerElement: 12) { gpu.emaUpdate(ema, toward: master, decay: 0.9999) }
        time("squaredNorm", bytesPerElement: 4) { _ = gpu.squaredNorm(gradient) }
    }
}
