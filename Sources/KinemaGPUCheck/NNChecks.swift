import KinemaTensor

extension GPUCheck {
    /// The NN op family (forward, backward and the accumulated parameter gradients) against the CPU backend.
    func checkNN() {
        let tolerance = 1e-5
        func same(_ name: String, _ ours: Tensor, _ reference: Tensor) {
            check(name, gpu.download(ours), cpu.download(reference), tolerance: tolerance)
        }

        for shape in Self.tokenShapes {
            let width = shape.last!, batch = shape[0]
            // LayerNorm, with and without the affine parameters; dWeight/dBias accumulate onto nonzero values, and
            // without parameter gradients the backward sums nothing.
            let (x, gx) = pair(shape, scale: 3), (dy, gdy) = pair(shape)
            let (w, gw) = pair([width]), (b, gb) = pair([width])
            for (affine, biasGradient) in [(true, true), (false, true), (false, false)] {
                let tag = "\(shape)\(affine ? "" : " no affine")\(biasGradient ? "" : " no dBias")"
                let c = cpu.layerNorm(x, weight: affine ? w : nil, bias: affine ? b : nil, eps: 1e-6)
                let g = gpu.layerNorm(gx, weight: affine ? gw : nil, bias: affine ? gb : nil, eps: 1e-6)
                same("layerNorm y \(tag)", g.y, c.y)
                same("layerNorm mean \(tag)", g.mean, c.mean)
                same("layerNorm rstd \(tag)", g.rstd, c.rstd)
                let (dW, gdW) = pair([width]), (dB, gdB) = pair([width])
                let cdx = cpu.layerNormBackward(dy, x: x, weight: affine ? w : nil, mean: c.mean, rstd: c.rstd,
                                                dWeight: affine ? dW : nil, dBias: biasGradient ? dB : nil)
                let gdx = gpu.layerNormBackward(gdy, x: gx, weight: affine ? gw : nil, mean: g.mean, rstd: g.rstd,
                                                dWeight: affine ? gdW : nil, dBias: biasGradient ? gdB : nil)
                same("layerNormBackward dx \(tag)", gdx, cdx)
                if affine { same("layerNormBackward dWeight \(tag)", gdW, dW) }
                if biasGradient { same("layerNormBackward dBias \(tag)", gdB, dB) }
            }

            // RMSNorm (T5's LayerNorm), with and without a weight.
            for weighted in [true, false] {
                let tag = "\(shape)\(weighted ? "" : " no weight")"
                let c = cpu.rmsNorm(x, weight: weighted ? w : nil, eps: 1e-6)
                let g = gpu.rmsNorm(gx, weight: weighted ? gw : nil, eps: 1e-6)
                same("rmsNorm y \(tag)", g.y, c.y)
                same("rmsNorm rstd \(tag)", g.rstd, c.rstd)
                let (dW, gdW) = pair([width])
                let cdx = cpu.rmsNormBackward(dy, x: x, weight: weighted ? w : nil, rstd: c.rstd, dWeight: weighted ? dW : nil)
                let gdx = gpu.rmsNormBackward(gdy, x: gx, weight: weighted ? gw : nil, rstd: g.rstd,
                                              dWeight: weighted ? gdW : nil)
                same("rmsNormBackward dx \(tag)", gdx, cdx)
                if weighted { same("rmsNormBackward dWeight \(tag)", gdW, dW) }
            }

            // adaLN modulate and gated residual.
            let (shift, gshift) = pair([batch, width]), (scale, gscale) = pair([batch, width])
            same("modulate \(shape)", gpu.modulate(gx, shift: gshift, scale: gscale), cpu.modulate(x, shift: shift, scale: scale))
            let cm = cpu.modulateBackward(dy, x: x, scale: scale), gm = gpu.modulateBackward(gdy, x: gx, scale: gscale)
            same("modulateBackward dx \(shape)", gm.dx, cm.dx)
            same("modulateBackward dShift \(shape)", gm.dShift, cm.dShift)
            same("modulateBackward dScale \(shape)", gm.dScale, cm.dScale)
            // Gated residual and activations (inputs spread over ±9 to reach both tails).
            checkResidualAndActivations("\(shape)", x: (x, gx), y: pair(shape), dy: (dy, gdy), gate: pair([batch, width]),
                                        same: same)
        }

        // Embedding with repeated indices (backward accumulates them, onto a nonzero table).
        for (rows, width, count) in [(10, 7, 6), (1001, 1152, 256)] {
            let (table, gtable) = pair([rows, width])
            let indices = (0..<count).map { Int32(($0 * 7 + 3) % Swift.min(rows, count / 2 + 1)) }
            let ci = cpu.upload(indices, shape: [count]), gi = gpu.upload(indices, shape: [count])
            same("embedding [\(rows), \(width)] × \(count)", gpu.embedding(gtable, indices: gi), cpu.embedding(table, indices: ci))
            let (dOut, gdOut) = pair([count, width]), (dTable, gdTable) = pair([rows, width])
            cpu.embeddingBackward(dOut, indices: ci, into: dTable)
            gpu.embeddingBackward(gdOut, indices: gi, into: gdTable)
            same("embeddingBackward dTable [\(rows), \(width)] × \(count)", gdTable, dTable)
        }
        // An index outside the table: the kernels skip it (a zero row), and the first one comes back as the CPU's
        // message at the next host read, which would stop the program (taken here before it can).
        let (table, gtable) = pair([10, 7])
        let bad = gpu.upload([Int32(2), 10, -1], shape: [3])
        let embedded = gpu.embedding(gtable, indices: bad)
        let message = gpu.takeIndexError() ?? "none"
        record("embedding reports the first index outside the table",
               message.hasPrefix("embedding: index 10 at position 1 is outside the table's 10 rows"), message)
        let rows = gpu.download(embedded), tableRows = cpu.download(table)
        record("embedding skips an index outside the table", Array(rows[0..<7]) == Array(tableRows[14..<21])
               && rows[7...].allSatisfy { $0 == 0 }, "\(rows.count) values")
        let (dOut, gdOut) = pair([3, 7]), gdTable = gpu.zeros([10, 7], dtype: .f32)
        gpu.embeddingBackward(gdOut, indices: bad, into: gdTable)
        let backwardMessage = gpu.takeIndexError() ?? "none"
        record("embeddingBackward reports an index outside the table",
               backwardMessage.hasPrefix("embeddingBackward: index 10 at position 1"), backwardMessage)
        let dRows = gpu.download(gdTable), dOutRows = cpu.download(dOut)
        record("embeddingBackward skips it", Array(dRows[14..<21]) == Array(dOutRows[0..<7])
               && dRows.enumerated().allSatisfy { $0.offset / 7 == 2 || $0.element == 0 }, "\(dRows.count) values")
        record("no index error after valid indices", { _ = gpu.embedding(gtable, indices: gpu.upload([Int32(0)], shape: [1]))
               return gpu.takeIndexError() == nil }(), "")

        // Timestep features, even and odd dims, both frequency shifts.
        let times: [Float] = [0, 1, 17.5, 250, 999, 3.25, 500.5]
        let ct = cpu.upload(times, shape: [times.count], dtype: .f32), gt = gpu.upload(times, shape: [times.count], dtype: .f32)
        for (dim, shift) in [(256, 0.0), (256, 1.0), (33, 1.0)] {
            same("timestepEmbedding dim \(dim) shift \(shift)",
                 gpu.timestepEmbedding(gt, dim: dim, maxPeriod: 10_000, frequencyShift: shift),
                 cpu.timestepEmbedding(ct, dim: dim, maxPeriod: 10_000, frequencyShift: shift))
        }
    }
}
