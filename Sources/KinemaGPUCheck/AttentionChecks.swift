import Foundation
import KinemaTensor

extension GPUCheck {
    /// Attention against the CPU backend: the exact f32 kernels against CPU f32 (1e-5), the bf16 flash kernels
    /// against CPU f64 on the same bf16-rounded inputs (1e-2), both with and without a key mask; then timings.
    func checkAttention() {
        checkExactAttention()
        checkBiasedAttention()
        checkAndTimeFlashAttention(checks: true)
    }

    /// The bf16 flash kernels' checks (when `checks`) and timings, on every backward path this GPU has.
    func checkAndTimeFlashAttention(checks: Bool) {
        // Both backwards: the short-sequence one (dSᵀ stored, the default at these sizes) and the two-kernel one,
        // each with the dK/dV kernel on mma.sync and, on sm_90, on wgmma.
        let (budget, hopper) = (gpu.scoreGradientBudget, gpu.usesHopperAttention)
        defer { (gpu.scoreGradientBudget, gpu.usesHopperAttention) = (budget, hopper) }
        for usesHopper in gpu.architecture == 90 ? [false, true] : [false] {
            gpu.usesHopperAttention = usesHopper
            for (path, bytes) in [("scores", budget), ("two-kernel", 0)] {
                gpu.scoreGradientBudget = bytes
                let name = usesHopper ? "\(path), wgmma dK/dV" : path
                if checks { checkFlashAttention(name) }
                for (batch, heads, tokens, headDim) in [(64, 16, 256, 72), (64, 16, 256, 64), (64, 8, 256, 128),
                                                        (8, 16, 1024, 72)] {
                    timeFlashAttention(name, batch: batch, heads: heads, tokens: tokens, headDim: headDim)
                }
            }
        }
    }

    /// A key mask [B, Nk] as host flags: batch row 0 attends to about 70% of the keys (always key 0), the last
    /// batch row (when B > 1) to none (its queries must give zeros, lse = −∞ and zero gradients), rows between to all.
    private func keyMaskFlags(batch: Int, keys: Int) -> [Int32] {
        (0..<batch).flatMap { b in
            (0..<keys).map { j -> Int32 in
                if b > 0 && b == batch - 1 { return 0 }
                return b > 0 || j == 0 || (j * 7919) % 10 < 7 ? 1 : 0
            }
        }
    }

    /// max |ours − reference| / max |reference| over the finite reference values ≤ tolerance, where −∞ in the
    /// reference (the lse of a fully masked row) must be −∞ in ours and every other value finite.
    /// `scaleFloor` bounds the denominator from below, for outputs that are exactly zero in exact arithmetic.
    private func compare(_ name: String, _ ours: [Double], _ reference: [Double], tolerance: Double,
                         scaleFloor: Double = 1e-30) {
        var difference = 0.0, scale = scaleFloor, ok = ours.count == reference.count
        for (a, b) in zip(ours, reference) {
            if b == -.infinity {
                ok = ok && a == -.infinity
            } else {
                ok = ok && a.isFinite
                difference = max(difference, abs(a - b))
                scale = max(scale, abs(b))
            }
        }
        record(name, ok && difference / scale <= tolerance,
               String(format: "relative error %.2e (bound %.0e)", difference / scale, tolerance))
    }

    /// Forward and backward of one problem on both backends, outputs compared; `cpuDType` is the reference's dtype.
    private func compareAttention(_ tag: String, q: (cpu: Tensor, gpu: Tensor), k: (cpu: Tensor, gpu: Tensor),
                                  v: (cpu: Tensor, gpu: Tensor), dOut: (cpu: Tensor, gpu: Tensor), mask: [Int32]?,
                                  tolerance: Double) {
        let scale = 1 / Double(q.cpu.shape[3]).squareRoot()
        let batch = q.cpu.shape[0], keys = k.cpu.shape[2]
        let cpuMask = mask.map { cpu.upload($0, shape: [batch, keys]) }
        let gpuMask = mask.map { gpu.upload($0, shape: [batch, keys]) }
        let c = cpu.attention(q: q.cpu, k: k.cpu, v: v.cpu, keyMask: cpuMask, scale: scale)
        let g = gpu.attention(q: q.gpu, k: k.gpu, v: v.gpu, keyMask: gpuMask, scale: scale)
        compare("attention out \(tag)", gpu.downloadDouble(g.out), cpu.downloadDouble(c.out), tolerance: tolerance)
        compare("attention logSumExp \(tag)", gpu.downloadDouble(g.logSumExp), cpu.downloadDouble(c.logSumExp),
                tolerance: tolerance)
        let cb = cpu.attentionBackward(dOut.cpu, q: q.cpu, k: k.cpu, v: v.cpu, out: c.out, logSumExp: c.logSumExp,
                                       keyMask: cpuMask, scale: scale)
        let gb = gpu.attentionBackward(dOut.gpu, q: q.gpu, k: k.gpu, v: v.gpu, out: g.out, logSumExp: g.logSumExp,
                                       keyMask: gpuMask, scale: scale)
        // With one key the softmax is constant: dq and dk are exactly 0 in exact arithmetic and only rounding
        // (δ = dO·O against dP = dO·v) is left, so they are measured against the size of dv instead.
        let dv = cpu.downloadDouble(cb.dv)
        let floor = keys == 1 ? dv.map(abs).max() ?? 1e-30 : 1e-30
        compare("attentionBackward dq \(tag)", gpu.downloadDouble(gb.dq), cpu.downloadDouble(cb.dq), tolerance: tolerance,
                scaleFloor: floor)
        compare("attentionBackward dk \(tag)", gpu.downloadDouble(gb.dk), cpu.downloadDouble(cb.dk), tolerance: tolerance,
                scaleFloor: floor)
        compare("attentionBackward dv \(tag)", gpu.downloadDouble(gb.dv), dv, tolerance: tolerance)
    }

    /// f32 on both sides: Nq ≠ Nk and Nq = Nk, head dims below and at a warp's multiple.
    private func checkExactAttention() {
        for (qShape, kShape) in [([2, 3, 5, 8], [2, 3, 7, 8]), ([1, 4, 130, 64], [1, 4, 130, 64]),
                                 ([2, 2, 200, 72], [2, 2, 33, 72])] {
            let (q, k, v, dOut) = (pair(qShape), pair(kShape), pair(kShape), pair(qShape))
            for masked in [false, true] {
                let mask = masked ? keyMaskFlags(batch: qShape[0], keys: kShape[2]) : nil
                compareAttention("f32 q \(qShape) k \(kShape)\(masked ? " mask" : "")", q: q, k: k, v: v, dOut: dOut,
                                 mask: mask, tolerance: 1e-5)
            }
        }
    }

    /// The text encoders' forward-only attention (T5's score bias, CLIP's causal mask, with a key mask): f32 against
    /// CPU f32, and bf16 (widened to the f32 kernel) against CPU f64 on the same bf16-rounded inputs.
    private func checkBiasedAttention() {
        let (batch, heads, tokens, headDim) = (2, 3, 77, 64)
        let shape = [batch, heads, tokens, headDim]
        let flags = keyMaskFlags(batch: batch, keys: tokens)
        let cpuMask = cpu.upload(flags, shape: [batch, tokens]), gpuMask = gpu.upload(flags, shape: [batch, tokens])
        for bf16 in [false, true] {
            let make = { (s: [Int]) in bf16 ? self.bf16Pair(s) : self.pair(s) }
            let (q, k, v, bias) = (make(shape), make(shape), make(shape), make([heads, tokens, tokens]))
            for (withBias, causal) in [(true, false), (false, true), (true, true)] {
                let c = cpu.biasedAttention(q: q.cpu, k: k.cpu, v: v.cpu, bias: withBias ? bias.cpu : nil, keyMask: cpuMask,
                                            causal: causal, scale: 0.125)
                let g = gpu.biasedAttention(q: q.gpu, k: k.gpu, v: v.gpu, bias: withBias ? bias.gpu : nil, keyMask: gpuMask,
                                            causal: causal, scale: 0.125)
                compare("biasedAttention \(bf16 ? "bf16" : "f32") bias \(withBias) causal \(causal)",
                        gpu.downloadDouble(g), cpu.downloadDouble(c), tolerance: bf16 ? 1e-2 : 1e-5)
            }
        }
    }

    /// The same fresh random values as bf16 on the GPU and, exactly, as f64 on the CPU.
    private func bf16Pair(_ shape: [Int]) -> (cpu: Tensor, gpu: Tensor) {
        let values = cpu.download(pair(shape).cpu)
        let device = gpu.upload(values, shape: shape, dtype: .bf16)
        return (cpu.upload(gpu.downloadDouble(device), shape: shape, dtype: .f64), device)
    }

    /// bf16 flash attention against CPU f64: the head dims DiT-style models use (72 and 88 are padded to 80 and
    /// 96), sizes that are no multiple of a tile, Nq ≠ Nk, a single key, and masks.
    private func checkFlashAttention(_ path: String) {
        for headDim in [64, 72, 88, 128] {
            for (queries, keys) in [(77, 77), (256, 120), (300, 1), (50, 333)] {
                let (batch, heads) = (2, 3)
                let qShape = [batch, heads, queries, headDim], kShape = [batch, heads, keys, headDim]
                let (q, k, v, dOut) = (bf16Pair(qShape), bf16Pair(kShape), bf16Pair(kShape), bf16Pair(qShape))
                for masked in [false, true] {
                    let mask = masked ? keyMaskFlags(batch: batch, keys: keys) : nil
                    compareAttention("flash bf16 (\(path) backward) Dh \(headDim) Nq \(queries) Nk \(keys)\(masked ? " mask" : "")",
                                     q: q, k: k, v: v, dOut: dOut, mask: mask, tolerance: 1e-2)
                }
            }
        }
    }

    /// The mean time of the bf16 flash forward and forward + backward on one shape (wall clock around a
    /// synchronize, after warm-up), with counted TFLOP/s: forward 4·B·H·N²·Dh, backward 2.5× that.
    private func timeFlashAttention(_ path: String, batch: Int, heads: Int, tokens: Int, headDim: Int) {
        let shape = [batch, heads, tokens, headDim]
        let poisons = gpu.poisonsNewTensors
        gpu.poisonsNewTensors = false  // a NaN fill per allocation is not part of the op
        defer { gpu.poisonsNewTensors = poisons }
        func input() -> Tensor { gpu.cast(gpu.randomNormal(shape, dtype: .f32, seed: 7, offset: 0), to: .bf16) }
        let (q, k, v, dOut) = (input(), input(), input(), input())
        let scale = 1 / Double(headDim).squareRoot()
        func milliseconds(_ body: () -> Void) -> Double {
            for _ in 0..<3 { body() }
            gpu.synchronize()
            let iterations = 20, start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<iterations { body() }
            gpu.synchronize()
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 / Double(iterations)
        }
        let forward = milliseconds { _ = gpu.attention(q: q, k: k, v: v, keyMask: nil, scale: scale) }
        let (_, lse) = gpu.attention(q: q, k: k, v: v, keyMask: nil, scale: scale)
        let both = milliseconds {
            let (out, lse) = gpu.attention(q: q, k: k, v: v, keyMask: nil, scale: scale)
            _ = gpu.attentionBackward(dOut, q: q, k: k, v: v, out: out, logSumExp: lse, keyMask: nil, scale: scale)
        }
        gpu.startProfiling()  // where the backward's time goes, kernel by kernel (events around each launch)
        for _ in 0..<5 {
            _ = gpu.attentionBackward(dOut, q: q, k: k, v: v, out: dOut, logSumExp: lse, keyMask: nil, scale: scale)
        }
        print(gpu.profiler!.report(steps: 5, top: 6))
        gpu.profiler = nil
        let flops = 4 * Double(batch * heads * tokens * tokens * headDim)
        print(String(format: "TIME kinema flash (\(path) backward) B=%d H=%d N=%d Dh=%d: forward %.3f ms (%.1f TFLOP/s), "
                     + "forward+backward %.3f ms (%.1f TFLOP/s)", batch, heads, tokens, headDim,
                     forward, flops / forward / 1e9, both, 3.5 * flops / both / 1e9))
    }
}
