import KinemaTensor

extension CUDABackend: DiffusionOps {
    private func requireF32Same(_ op: String, _ tensors: Tensor...) {
        for t in tensors {
            precondition(t.dtype == .f32, "\(op): the CUDA diffusion kernels take f32 (a model's output at its interface), not \(t.dtype)")
            precondition(t.shape == tensors[0].shape, "\(op): shapes differ: \(tensors[0].shape) vs \(t.shape)")
        }
        precondition(tensors[0].rank >= 1 && tensors[0].shape[0] > 0, "\(op): need a batch axis")
    }

    /// Adds each sample's block partials in order (the same fixed 8192-element blocks as the CPU's blockedSum).
    private func perSampleSums(_ partial: Tensor, samples: Int, blocksPerSample: Int) -> [Double] {
        let values = downloadDouble(partial)
        return (0..<samples).map { s in
            var total = 0.0
            for b in 0..<blocksPerSample { total += values[s * blocksPerSample + b] }
            return total
        }
    }

    public func meanSquaredError(_ prediction: Tensor, target: Tensor,
                                 weights: [Double]) -> (perSample: [Double], gradient: Tensor) {
        requireF32Same("meanSquaredError", prediction, target)
        let samples = prediction.shape[0], size = prediction.count / samples
        precondition(weights.count == samples, "meanSquaredError: \(weights.count) weights for \(samples) samples")
        let gradient = empty(prediction.shape, dtype: .f32)
        guard size > 0 else { return ([Double](repeating: .nan, count: samples), gradient) }
        let blocksPerSample = (size + 8191) / 8192
        let partial = empty([samples * blocksPerSample], dtype: .f64)
        let weightTensor = upload(weights, shape: [samples], dtype: .f64)
        launch("mse_f32", in: "Training", count: prediction.count, blocks: samples * blocksPerSample, threads: 256,
               [prediction, target, gradient, weightTensor, partial, Int64(size), Int64(blocksPerSample)])
        let sums = perSampleSums(partial, samples: samples, blocksPerSample: blocksPerSample)
        return (sums.map { $0 / Double(size) }, gradient)
    }

    public func variationalBound(epsilon: Tensor, varianceValues: Tensor, xStart: Tensor, xT: Tensor,
                                 coefficients: [VLBCoefficients], mask: Tensor?,
                                 weights: [Double]) -> (perSample: [Double], gradient: Tensor) {
        requireF32Same("variationalBound", epsilon, varianceValues, xStart, xT)
        if let mask { requireF32Same("variationalBound (mask)", epsilon, mask) }
        let samples = epsilon.shape[0], size = epsilon.count / samples
        precondition(coefficients.count == samples && weights.count == samples,
                     "variationalBound: need \(samples) coefficients and weights")
        let gradient = empty(epsilon.shape, dtype: .f32)
        guard size > 0 else { return ([Double](repeating: .nan, count: samples), gradient) }
        let blocksPerSample = (size + 8191) / 8192
        let partial = empty([samples * blocksPerSample], dtype: .f64)
        let packed: [Double] = coefficients.flatMap { c -> [Double] in
            [c.posteriorMeanCoef1, c.posteriorMeanCoef2, c.posteriorLogVariance, c.logBeta, c.sqrtRecipAlphaBar,
             c.sqrtRecipM1AlphaBar, c.isFirstStep ? 1.0 : 0.0]
        }
        let coefficientTensor = upload(packed, shape: [samples, 7], dtype: .f64)
        let weightTensor = upload(weights, shape: [samples], dtype: .f64)
        launch("vlb_f32", in: "Training", count: epsilon.count, blocks: samples * blocksPerSample, threads: 256,
               [epsilon, varianceValues, xStart, xT, argument(mask), gradient, coefficientTensor, weightTensor, partial,
                Int64(size), Int64(blocksPerSample)])
        let sums = perSampleSums(partial, samples: samples, blocksPerSample: blocksPerSample)
        return (sums.map { $0 / Double(size) }, gradient)
    }
}
