import KinemaTensor

extension GPUCheck {
    /// Memory, layout and elementwise ops, and the allocator's steady state.
    func checkMemoryAndElementwise() {
        for count in [1, 7, 1000, 65_537, 1_000_003] {
            let shape = [count]
            let (a, ga) = pair(shape), (b, gb) = pair(shape), (p, gp) = pair(shape, positive: true)
            check("add n=\(count)", gpu.download(gpu.add(ga, gb)), cpu.download(cpu.add(a, b)))
            check("sub n=\(count)", gpu.download(gpu.sub(ga, gb)), cpu.download(cpu.sub(a, b)))
            check("mul n=\(count)", gpu.download(gpu.mul(ga, gb)), cpu.download(cpu.mul(a, b)))
            check("affine n=\(count)", gpu.download(gpu.affine(ga, scale: 0.3, shift: -2)),
                  cpu.download(cpu.affine(a, scale: 0.3, shift: -2)))
            for op in [UnaryOp.exp, .square, .negate, .tanh, .abs, .geluErf, .relu, .quickGelu] {
                check("unary \(op) n=\(count)", gpu.download(gpu.unary(op, ga)), cpu.download(cpu.unary(op, a)))
            }
            for op in [UnaryOp.log, .sqrt] {
                check("unary \(op) n=\(count)", gpu.download(gpu.unary(op, gp)), cpu.download(cpu.unary(op, p)))
            }
            check("clamp n=\(count)", gpu.download(gpu.clamp(ga, min: -0.5, max: 0.7)),
                  cpu.download(cpu.clamp(a, min: -0.5, max: 0.7)))
            let (y, gy) = pair(shape)
            cpu.axpy(0.25, a, y)
            gpu.axpy(0.25, ga, gy)
            check("axpy n=\(count)", gpu.download(gy), cpu.download(y))
            cpu.scaleInPlace(y, by: -1.5)
            gpu.scaleInPlace(gy, by: -1.5)
            check("scaleInPlace n=\(count)", gpu.download(gy), cpu.download(y))
            check("sum n=\(count)", [Float(gpu.sum(ga))], [Float(cpu.sum(a))])
            check("sumOfSquares n=\(count)", [Float(gpu.sumOfSquares(ga))], [Float(cpu.sumOfSquares(a))])
            for dtype in [DType.bf16, .f16, .f64] {
                check("cast f32→\(dtype)→f32 n=\(count)", gpu.download(gpu.cast(gpu.cast(ga, to: dtype), to: .f32)),
                      cpu.download(cpu.cast(cpu.cast(a, to: dtype), to: .f32)), tolerance: 0)
            }
        }
        // Ranges filled in one launch, the rest kept: empty, adjacent and end-touching ranges, in every width, of a
        // view that starts inside its buffer.
        let ranges = [0..<5, 5..<5, 17..<1_300, 1_300..<1_301, 2_000..<2_001, 40_000..<70_001]
        for dtype in [DType.f32, .bf16, .f64] {
            let (a, ga) = pair([70_004])
            let view = { (t: Tensor) in Tensor(shape: [70_001], dtype: dtype, buffer: t.buffer, offset: t.offset + 3) }
            let (x, gx) = (view(cpu.cast(a, to: dtype)), view(gpu.cast(ga, to: dtype)))
            cpu.fill(x, ranges: ranges, with: -2.5)
            gpu.fill(gx, ranges: ranges, with: -2.5)
            check("fill ranges \(dtype) n=70001", gpu.download(gpu.cast(gx, to: .f32)), cpu.download(cpu.cast(x, to: .f32)),
                  tolerance: 0)
        }
        for shape in [[3, 5, 7], [2, 3, 4, 5, 6, 7], [2, 3, 2, 2, 3, 2, 2, 2]] {
            let (x, gx) = pair(shape)
            // Reversed, and for rank 8 the 3D patchify's [B, C, T, pt, H, p, W, p] → [B, T, H, W, C, pt, p, p].
            let axes = shape.count == 8 ? [0, 2, 4, 6, 1, 3, 5, 7] : Array((0..<shape.count).reversed())
            check("permute \(shape) → \(axes)", gpu.download(gpu.permute(gx, axes)), cpu.download(cpu.permute(x, axes)),
                  tolerance: 0)
            // Keeping the last axis moves it in words of up to 16 bytes: odd, word-sized and wide rows in each dtype.
            for last in [1, 3, 8, 72] {
                let kept = Array(shape.dropLast()) + [last]
                let (k, gk) = pair(kept)
                let axes = Array((0..<kept.count - 1).reversed()) + [kept.count - 1]
                for dtype in [DType.f32, .bf16, .f64] {
                    let ours = gpu.download(gpu.cast(gpu.permute(gpu.cast(gk, to: dtype), axes), to: .f32))
                    let want = cpu.download(cpu.cast(cpu.permute(cpu.cast(k, to: dtype), axes), to: .f32))
                    check("permute \(dtype) \(kept) → \(axes)", ours, want, tolerance: 0)
                }
            }
            check("narrow \(shape) axis 1", gpu.download(gpu.narrow(gx, axis: 1, start: 1, length: 2)),
                  cpu.download(cpu.narrow(x, axis: 1, start: 1, length: 2)), tolerance: 0)
            check("concat \(shape) axis 1", gpu.download(gpu.concat([gx, gx], axis: 1)),
                  cpu.download(cpu.concat([x, x], axis: 1)), tolerance: 0)
            let rows = shape[0]
            let a = (0..<rows).map { Double($0) + 0.5 }, b = (0..<rows).map { 1 - Double($0) }
            let (y, gy) = pair(shape)
            check("rowwiseAxpby \(shape)", gpu.download(gpu.rowwiseAxpby(a, gx, b, gy)),
                  cpu.download(cpu.rowwiseAxpby(a, x, b, y)))
        }
        // chunk (one launch for every part) and a concat of more inputs than one launch takes (two launches), with
        // 16-byte rows ([4, 12, 8]) and 2-byte ones ([3, 6, 5]).
        for shape in [[4, 12, 8], [3, 6, 5]] {
            let (x, gx) = pair(shape)
            for parts in [3, 6] {
                for (part, (g, c)) in zip(gpu.chunk(gx, parts: parts, axis: 1), cpu.chunk(x, parts: parts, axis: 1)).enumerated() {
                    check("chunk \(shape) into \(parts), part \(part)", gpu.download(g), cpu.download(c), tolerance: 0)
                }
            }
            check("concat of 10 \(shape) axis 2", gpu.download(gpu.concat(Array(repeating: gx, count: 10), axis: 2)),
                  cpu.download(cpu.concat(Array(repeating: x, count: 10), axis: 2)), tolerance: 0)
        }
        // A warm loop asks the driver for nothing.
        _ = gpu.add(gpu.zeros([4096], dtype: .f32), gpu.zeros([4096], dtype: .f32))
        let before = gpu.deviceAllocationCount
        for _ in 0..<10 { _ = gpu.add(gpu.zeros([4096], dtype: .f32), gpu.zeros([4096], dtype: .f32)) }
        let steady = gpu.deviceAllocationCount - before
        record("allocator: no driver allocation when warm", steady == 0,
               "\(steady) driver allocations, peak \(gpu.peakMemory) bytes")
    }
}
