import KinemaTensor

extension GPUCheck {
    /// The same fresh random values as an f32 tensor on the CPU and a bf16 tensor on the GPU, rounded to bf16 first,
    /// so the two backends start from identical inputs and differ only in the precision they compute in.
    func pairBF16(_ shape: [Int], scale: Float = 1) -> (cpu: Tensor, gpu: Tensor) {
        let (values, _) = pair(shape, scale: scale)
        let rounded = cpu.cast(cpu.cast(values, to: .bf16), to: .f32)
        return (rounded, gpu.upload(cpu.download(rounded), shape: shape, dtype: .bf16))
    }

    /// Every op the DiT runs in bf16 (fused epilogues and fused pre-norm included) against the CPU in f32 on the
    /// same bf16-rounded inputs: relative error under 1e-2. The fused ops are also checked in f32 (1e-5) against
    /// the CPU's composition of their parts.
    func checkMixedPrecision() {
        let bf16Tolerance = 1e-2
        func same(_ name: String, _ ours: Tensor, _ reference: Tensor, tolerance: Double = 1e-2) {
            check(name, gpu.download(ours), cpu.download(reference), tolerance: tolerance)
        }

        for shape in Self.tokenShapes {
            let (batch, width) = (shape[0], shape.last!)
            let (x, gx) = pairBF16(shape, scale: 3), (y, gy) = pairBF16(shape), (dy, gdy) = pairBF16(shape)
            let tag = "bf16 \(shape)"
            same("add \(tag)", gpu.add(gx, gy), cpu.add(x, y))
            same("mul \(tag)", gpu.mul(gx, gy), cpu.mul(x, y))
            same("affine \(tag)", gpu.affine(gx, scale: 0.5, shift: -1), cpu.affine(x, scale: 0.5, shift: -1))
            same("unary tanh \(tag)", gpu.unary(.tanh, gx), cpu.unary(.tanh, x))
            let sumError = abs(gpu.sumOfSquares(gx) - cpu.sumOfSquares(x)) / cpu.sumOfSquares(x)
            record("sumOfSquares \(tag)", sumError < 1e-6, "relative error \(sumError)")

            // LayerNorm alone (affine) and fused with the modulation, forward and backward.
            let (w, gw) = pairBF16([width]), (b, gb) = pairBF16([width])
            let c = cpu.layerNorm(x, weight: w, bias: b, eps: 1e-6), g = gpu.layerNorm(gx, weight: gw, bias: gb, eps: 1e-6)
            same("layerNorm y \(tag)", g.y, c.y)
            let (dW, _) = pair([width]), (dB, _) = pair([width])
            let gdW = gpu.upload(cpu.download(dW), shape: [width], dtype: .f32)
            let gdB = gpu.upload(cpu.download(dB), shape: [width], dtype: .f32)
            same("layerNormBackward dx \(tag)",
                 gpu.layerNormBackward(gdy, x: gx, weight: gw, mean: g.mean, rstd: g.rstd, dWeight: gdW, dBias: gdB),
                 cpu.layerNormBackward(dy, x: x, weight: w, mean: c.mean, rstd: c.rstd, dWeight: dW, dBias: dB))
            same("layerNormBackward dWeight (f32) \(tag)", gdW, dW)
            same("layerNormBackward dBias (f32) \(tag)", gdB, dB)

            let (shift, gshift) = pairBF16([batch, width]), (scale, gscale) = pairBF16([batch, width])
            let (residual, gresidual) = pairBF16(shape), (gate, ggate) = pairBF16([batch, width])
            for (element, toleranceHere) in [(DType.bf16, bf16Tolerance), (.f32, 1e-5)] {
                let name = element == .bf16 ? tag : "f32 \(shape)"
                let cast = { (t: Tensor) in element == .bf16 ? t : self.gpu.cast(t, to: .f32) }
                let cm = cpu.layerNormModulate(x, shift: shift, scale: scale, eps: 1e-6)
                let gm = gpu.layerNormModulate(cast(gx), shift: cast(gshift), scale: cast(gscale), eps: 1e-6)
                same("layerNormModulate y \(name)", gm.y, cm.y, tolerance: toleranceHere)
                same("layerNormModulate rstd \(name)", gm.rstd, cm.rstd, tolerance: toleranceHere)
                // The gated residual fused into the pre-norm after it, against the CPU's composition of the two.
                let cf = cpu.gatedResidualLayerNormModulate(x, gate: gate, y, shift: shift, scale: scale, eps: 1e-6)
                let gf = gpu.gatedResidualLayerNormModulate(cast(gx), gate: cast(ggate), cast(gy), shift: cast(gshift),
                                                            scale: cast(gscale), eps: 1e-6)
                same("gatedResidualLayerNormModulate sum \(name)", gf.sum, cf.sum, tolerance: toleranceHere)
                same("gatedResidualLayerNormModulate y \(name)", gf.y, cf.y, tolerance: toleranceHere)
                same("gatedResidualLayerNormModulate rstd \(name)", gf.rstd, cf.rstd, tolerance: toleranceHere)
                for withResidual in [false, true] {
                    let cb = cpu.layerNormModulateBackward(dy, x: x, scale: scale, mean: cm.mean, rstd: cm.rstd, eps: 1e-6,
                                                           residual: withResidual ? residual : nil)
                    let backward = {
                        self.gpu.layerNormModulateBackward(cast(gdy), x: cast(gx), scale: cast(gscale), mean: gm.mean,
                                                           rstd: gm.rstd, eps: 1e-6,
                                                           residual: withResidual ? cast(gresidual) : nil)
                    }
                    let gbw = backward(), again = backward()
                    let suffix = withResidual ? " + residual" : ""
                    same("layerNormModulateBackward dx\(suffix) \(name)", gbw.dx, cb.dx, tolerance: toleranceHere)
                    same("layerNormModulateBackward dShift\(suffix) \(name)", gbw.dShift, cb.dShift, tolerance: toleranceHere)
                    same("layerNormModulateBackward dScale\(suffix) \(name)", gbw.dScale, cb.dScale, tolerance: toleranceHere)
                    checkRepeats("layerNormModulateBackward repeat\(suffix) \(name)", [gbw.dx, gbw.dShift, gbw.dScale],
                                 [again.dx, again.dShift, again.dScale])
                }
            }

            // Modulation and gated residual.
            same("modulate \(tag)", gpu.modulate(gx, shift: gshift, scale: gscale), cpu.modulate(x, shift: shift, scale: scale))
            let cmb = cpu.modulateBackward(dy, x: x, scale: scale), gmb = gpu.modulateBackward(gdy, x: gx, scale: gscale)
            same("modulateBackward dx \(tag)", gmb.dx, cmb.dx)
            same("modulateBackward dShift \(tag)", gmb.dShift, cmb.dShift)
            same("modulateBackward dScale \(tag)", gmb.dScale, cmb.dScale)
            checkResidualAndActivations(tag, x: (x, gx), y: (y, gy), dy: (dy, gdy), gate: (gate, ggate),
                                        same: { same($0, $1, $2) })

            // Bias: added in bf16, its gradient accumulated in f32.
            let (bias, gbias) = pairBF16([width])
            same("addBias \(tag)", gpu.addBias(gx, gbias), cpu.addBias(x, bias))
            let (accumulator, _) = pair([width])
            let gaccumulator = gpu.upload(cpu.download(accumulator), shape: [width], dtype: .f32)
            cpu.accumulateBiasGradient(dy, into: accumulator)
            gpu.accumulateBiasGradient(gdy, into: gaccumulator)
            same("accumulateBiasGradient (f32) \(tag)", gaccumulator, accumulator)
        }

        // Products: bf16 in, f32 accumulate, bf16 out or accumulated into f32 (weight gradients, β = 1); Linear with
        // its bias and GELU epilogues, and the input gradient with the GELU-backward epilogue. Odd sizes have no
        // fused algorithm and take the composed path.
        for (rows, inFeatures, outFeatures) in [(5, 7, 3), (77, 130, 48), (1024, 1152, 4608), (512, 4608, 1152)] {
            let (x, gx) = pairBF16([rows, inFeatures]), (w, gw) = pairBF16([outFeatures, inFeatures], scale: 0.05)
            let (b, gb) = pairBF16([outFeatures])
            let tag = "[\(rows), \(inFeatures)] → \(outFeatures)"
            same("matmul bf16 \(tag)", gpu.matmul(gx, gw, transposeB: true), cpu.matmul(x, w, transposeB: true))
            let (dy, gdy) = pairBF16([rows, outFeatures])
            let (grad, _) = pair([outFeatures, inFeatures])
            let ggrad = gpu.upload(cpu.download(grad), shape: grad.shape, dtype: .f32)
            cpu.matmul(dy, x, transposeA: true, transposeB: false, into: grad, alpha: 1, beta: 1)
            gpu.matmul(gdy, gx, transposeA: true, transposeB: false, into: ggrad, alpha: 1, beta: 1)
            same("matmul bf16 → f32 accumulate dW \(tag)", ggrad, grad)
            for (element, tolerance) in [(DType.bf16, bf16Tolerance), (.f32, 1e-5)] {
                let cast = { (t: Tensor) in element == .bf16 ? t : self.gpu.cast(t, to: .f32) }
                let name = "\(element) \(tag)"
                let cLinear = cpu.linear(x, weight: w, bias: b, gelu: false)
                same("linear + bias \(name)", gpu.linear(cast(gx), weight: cast(gw), bias: cast(gb), gelu: false).y,
                     cLinear.y, tolerance: tolerance)
                let cGELU = cpu.linear(x, weight: w, bias: b, gelu: true)
                let gGELU = gpu.linear(cast(gx), weight: cast(gw), bias: cast(gb), gelu: true)
                same("linear + bias + GELU y \(name)", gGELU.y, cGELU.y, tolerance: tolerance)
                same("linear + bias + GELU pre-activation \(name)", gGELU.preActivation!, cGELU.preActivation!,
                     tolerance: tolerance)
                let (dOut, gdOut) = pairBF16([rows, outFeatures])
                same("linearInputGradient \(name)",
                     gpu.linearInputGradient(cast(gdOut), weight: cast(gw), geluInput: nil, biasGradient: nil),
                     cpu.linearInputGradient(dOut, weight: w, geluInput: nil, biasGradient: nil), tolerance: tolerance)
                let (z, gz) = pairBF16([rows, inFeatures], scale: 2)
                same("linearInputGradient × GELU′ \(name)",
                     gpu.linearInputGradient(cast(gdOut), weight: cast(gw), geluInput: cast(gz), biasGradient: nil),
                     cpu.linearInputGradient(dOut, weight: w, geluInput: z, biasGradient: nil), tolerance: tolerance)
            }
        }

        // Self-attention straight from a packed qkv (flash attention by strides, no permutes) against the CPU's
        // permutes around attention.
        for (batch, tokens, heads, headDim) in [(2, 77, 4, 72), (4, 256, 16, 72), (2, 130, 6, 64)] {
            let width = heads * headDim, scale = 1 / Double(headDim).squareRoot()
            let (qkv, gqkv) = pairBF16([batch, tokens, 3 * width]), (dOut, gdOut) = pairBF16([batch, tokens, width])
            let tag = "bf16 [\(batch), \(tokens)] \(heads)×\(headDim)"
            let c = cpu.packedSelfAttention(qkv, heads: heads, keyMask: nil, scale: scale)
            let g = gpu.packedSelfAttention(gqkv, heads: heads, keyMask: nil, scale: scale)
            same("packedSelfAttention out \(tag)", g.out, c.out)
            same("packedSelfAttention logSumExp \(tag)", g.logSumExp, c.logSumExp)
            same("packedSelfAttentionBackward dqkv \(tag)",
                 gpu.packedSelfAttentionBackward(gdOut, qkv: gqkv, out: g.out, logSumExp: g.logSumExp, heads: heads,
                                                 keyMask: nil, scale: scale),
                 cpu.packedSelfAttentionBackward(dOut, qkv: qkv, out: c.out, logSumExp: c.logSumExp, heads: heads,
                                                 keyMask: nil, scale: scale))
        }

        // Cross-attention of q [B, N, D] to a packed kv [B, L, 2D] by strides, with a caption mask (each row keeps
        // at least one key) and without, against the CPU's permutes.
        for (batch, queries, keys, heads, headDim, masked) in [(2, 77, 120, 4, 72, true), (3, 256, 19, 16, 72, false),
                                                                (2, 130, 65, 6, 64, true)] {
            let width = heads * headDim, scale = 1 / Double(headDim).squareRoot()
            let (q, gq) = pairBF16([batch, queries, width]), (kv, gkv) = pairBF16([batch, keys, 2 * width])
            let (dOut, gdOut) = pairBF16([batch, queries, width])
            let mask = (0..<batch * keys).map { Int32($0 % keys < keys - ($0 / keys + 1) * keys / 5 ? 1 : 0) }
            let cMask = masked ? cpu.upload(mask, shape: [batch, keys]) : nil
            let gMask = masked ? gpu.upload(mask, shape: [batch, keys]) : nil
            let tag = "bf16 [\(batch), \(queries)] × [\(batch), \(keys)] \(heads)×\(headDim)\(masked ? " masked" : "")"
            let c = cpu.packedCrossAttention(q, kv: kv, heads: heads, keyMask: cMask, scale: scale)
            let g = gpu.packedCrossAttention(gq, kv: gkv, heads: heads, keyMask: gMask, scale: scale)
            same("packedCrossAttention out \(tag)", g.out, c.out)
            same("packedCrossAttention logSumExp \(tag)", g.logSumExp, c.logSumExp)
            let cb = cpu.packedCrossAttentionBackward(dOut, q: q, kv: kv, out: c.out, logSumExp: c.logSumExp,
                                                      heads: heads, keyMask: cMask, scale: scale)
            let gb = gpu.packedCrossAttentionBackward(gdOut, q: gq, kv: gkv, out: g.out, logSumExp: g.logSumExp,
                                                      heads: heads, keyMask: gMask, scale: scale)
            same("packedCrossAttentionBackward dq \(tag)", gb.dq, cb.dq)
            same("packedCrossAttentionBackward dkv \(tag)", gb.dkv, cb.dkv)
        }

        // Embedding rows of a bf16 table; the table's gradient accumulates in f32.
        let (table, gtable) = pairBF16([1001, 1152])
        let indices = (0..<64).map { Int32(($0 * 37) % 1001) }
        let ci = cpu.upload(indices, shape: [64]), gi = gpu.upload(indices, shape: [64])
        same("embedding bf16 [1001, 1152] × 64", gpu.embedding(gtable, indices: gi), cpu.embedding(table, indices: ci))
        let (dOut, gdOut) = pairBF16([64, 1152]), (dTable, _) = pair([1001, 1152])
        let gdTable = gpu.upload(cpu.download(dTable), shape: dTable.shape, dtype: .f32)
        cpu.embeddingBackward(dOut, indices: ci, into: dTable)
        gpu.embeddingBackward(gdOut, indices: gi, into: gdTable)
        same("embeddingBackward bf16 → f32 dTable", gdTable, dTable)
    }
}

extension GPUCheck {
    /// The gated residual and the activations, forward and backward, on given CPU/GPU pairs: shared by the f32
    /// checks and the bf16 ones (which differ in their inputs and their bound).
    func checkResidualAndActivations(_ tag: String, x: (cpu: Tensor, gpu: Tensor), y: (cpu: Tensor, gpu: Tensor),
                                     dy: (cpu: Tensor, gpu: Tensor), gate: (cpu: Tensor, gpu: Tensor),
                                     same: (String, Tensor, Tensor) -> Void) {
        same("gatedResidual \(tag)", gpu.gatedResidual(x.gpu, gate: gate.gpu, y.gpu), cpu.gatedResidual(x.cpu, gate: gate.cpu, y.cpu))
        let cr = cpu.gatedResidualBackward(dy.cpu, gate: gate.cpu, y: y.cpu)
        let gr = gpu.gatedResidualBackward(dy.gpu, gate: gate.gpu, y: y.gpu)
        same("gatedResidualBackward dGate \(tag)", gr.dGate, cr.dGate)
        same("gatedResidualBackward dY \(tag)", gr.dY, cr.dY)
        let again = gpu.gatedResidualBackward(dy.gpu, gate: gate.gpu, y: y.gpu)
        checkRepeats("gatedResidualBackward repeat \(tag)", [gr.dGate, gr.dY], [again.dGate, again.dY])
        // The bias gradient of the layer before the gate, from the per-sample sums (added to what it held).
        let width = y.cpu.shape.last!, start = (0..<width).map { Float($0 % 7) - 3 }
        let cpuBias = cpu.upload(start, shape: [width], dtype: .f32), gpuBias = gpu.upload(start, shape: [width], dtype: .f32)
        _ = cpu.gatedResidualBackward(dy.cpu, gate: gate.cpu, y: y.cpu, biasGradient: cpuBias)
        let fused = gpu.gatedResidualBackward(dy.gpu, gate: gate.gpu, y: y.gpu, biasGradient: gpuBias)
        same("gatedResidualBackward dY with a bias gradient \(tag)", fused.dY, cr.dY)
        same("gatedResidualBackward bias gradient \(tag)", gpuBias, cpuBias)
        same("gelu \(tag)", gpu.gelu(x.gpu), cpu.gelu(x.cpu))
        same("geluBackward \(tag)", gpu.geluBackward(dy.gpu, x: x.gpu), cpu.geluBackward(dy.cpu, x: x.cpu))
        same("silu \(tag)", gpu.silu(x.gpu), cpu.silu(x.cpu))
        same("siluBackward \(tag)", gpu.siluBackward(dy.gpu, x: x.gpu), cpu.siluBackward(dy.cpu, x: x.cpu))
    }
}
