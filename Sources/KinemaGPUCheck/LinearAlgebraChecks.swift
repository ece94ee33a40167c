import KinemaTensor

extension GPUCheck {
    /// cuBLASLt products in every transpose combination, batched and folded, accumulating with alpha/beta; bias ops.
    func checkLinearAlgebra() {
        let cases: [(a: [Int], b: [Int], ta: Bool, tb: Bool)] = [
            ([5, 7], [7, 3], false, false), ([7, 5], [7, 3], true, false), ([5, 7], [3, 7], false, true),
            ([7, 5], [3, 7], true, true), ([3, 17, 33], [3, 33, 65], false, false),
            ([3, 33, 17], [3, 65, 33], true, true), ([2, 9, 16], [24, 16], false, true),
            ([4, 256, 1152], [3456, 1152], false, true), ([1031, 129], [1031, 257], true, false),
        ]
        for (aShape, bShape, ta, tb) in cases {
            let (a, ga) = pair(aShape), (b, gb) = pair(bShape)
            let name = "matmul \(aShape)\(ta ? "ᵀ" : "") × \(bShape)\(tb ? "ᵀ" : "")"
            let c = cpu.matmul(a, b, transposeA: ta, transposeB: tb)
            let gc = gpu.matmul(ga, gb, transposeA: ta, transposeB: tb)
            check(name, gpu.download(gc), cpu.download(c), tolerance: 1e-5)
            // Accumulate: c ← 0.5 · op(a) op(b) + 2 c.
            cpu.matmul(a, b, transposeA: ta, transposeB: tb, into: c, alpha: 0.5, beta: 2)
            gpu.matmul(ga, gb, transposeA: ta, transposeB: tb, into: gc, alpha: 0.5, beta: 2)
            check(name + " α=0.5 β=2", gpu.download(gc), cpu.download(c), tolerance: 1e-5)
        }
        let a64 = cpu.cast(pair([37, 19]).cpu, to: .f64), b64 = cpu.cast(pair([19, 23]).cpu, to: .f64)
        let g64 = gpu.matmul(gpu.upload(cpu.downloadDouble(a64), shape: [37, 19], dtype: .f64),
                             gpu.upload(cpu.downloadDouble(b64), shape: [19, 23], dtype: .f64))
        let reference = cpu.downloadDouble(cpu.matmul(a64, b64)), ours = gpu.downloadDouble(g64)
        let error = zip(ours, reference).map { abs($0 - $1) }.max()! / reference.map(abs).max()!
        record("matmul f64 [37, 19] × [19, 23]", error < 1e-12, "relative error \(error)")

        for shape in [[3, 7], [2, 5, 130], [1000, 1152]] {
            let (x, gx) = pair(shape), (bias, gbias) = pair([shape.last!])
            check("addBias \(shape)", gpu.download(gpu.addBias(gx, gbias)), cpu.download(cpu.addBias(x, bias)))
            let (acc, gacc) = pair([shape.last!])
            cpu.accumulateBiasGradient(x, into: acc)
            gpu.accumulateBiasGradient(gx, into: gacc)
            check("accumulateBiasGradient \(shape)", gpu.download(gacc), cpu.download(acc), tolerance: 1e-5)
        }
    }
}
