import KinemaTensor

/// The training side of IDDPM's Gaussian diffusion as DiT configures it (`create_diffusion("")`): linear schedule,
/// ε prediction, MSE loss, and — with `learnSigma` — learned-range variance trained through the variational bound
/// (DiT's hybrid loss). Schedule arithmetic runs on the host in f64; tensor work goes through the backend.
public struct GaussianDiffusion: Sendable {
    public let schedule: NoiseSchedule
    /// The model outputs [ε̂, v] (2C channels) when true, ε̂ alone (C channels) otherwise.
    public let learnSigma: Bool

    public init(schedule: NoiseSchedule = .dit(), learnSigma: Bool = true) {
        self.schedule = schedule
        self.learnSigma = learnSigma
    }

    public var stepCount: Int { schedule.count }

    /// One timestep per sample, uniform over 0..<stepCount (IDDPM's `UniformSampler`), drawn from `random`.
    public func sampleTimesteps(batch: Int, random: inout RandomStream) -> [Int] {
        (0..<batch).map { _ in random.nextInt(below: stepCount) }
    }

    /// q(x_t | x_0) sampled with the given noise: x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε, per sample.
    public func qSample(_ xStart: Tensor, timesteps: [Int], noise: Tensor, backend: any Backend) -> Tensor {
        precondition(timesteps.count == xStart.shape[0], "qSample: \(timesteps.count) timesteps for batch \(xStart.shape[0])")
        return backend.rowwiseAxpby(timesteps.map { schedule.sqrtAlphasCumprod[$0] }, xStart,
                                    timesteps.map { schedule.sqrtOneMinusAlphasCumprod[$0] }, noise)
    }

    /// Everything a training step needs before the model runs: uniform timesteps, standard normal noise from the
    /// device stream (seed and offset reserved from `random`, so every backend draws the same values) and x_t.
    /// `frameMask` (video latents [B, C, F, …]): conditioning frames keep x_0 in x_t.
    public func noisedBatch(_ xStart: Tensor, frameMask: FrameMask? = nil, random: inout RandomStream,
                            backend: any Backend) -> (timesteps: [Int], noise: Tensor, xT: Tensor) {
        let timesteps = sampleTimesteps(batch: xStart.shape[0], random: &random)
        let offset = random.reserveNormals(xStart.count)
        let noise = backend.randomNormal(xStart.shape, dtype: xStart.dtype, seed: random.seed, offset: offset)
        let xT = qSample(xStart, timesteps: timesteps, noise: noise, backend: backend)
        return (timesteps, noise, frameMask?.keepConditioningFrames(xT, clean: xStart, backend: backend) ?? xT)
    }

    /// The loss terms of one batch and the gradient of the scalar loss with respect to the model output.
    public struct TrainingLoss {
        /// mean over the batch of `perSample`: the value DiT logs and differentiates.
        public var loss: Double
        /// mse_i (+ vb_i when the variance is learned).
        public var perSample: [Double]
        /// Per-sample mean of (ε̂ − ε)².
        public var mse: [Double]
        /// Per-sample variational-bound term in bits per dimension (nil without learned sigma).
        public var vb: [Double]?
        /// d loss / d model output, shaped like the model output ([B, 2C, …] or [B, C, …]).
        public var gradient: Tensor

        /// The batch means of `mse` and `vb`: what a training log records beside the loss.
        public var meanMSE: Double { mse.reduce(0, +) / Double(mse.count) }
        public var meanVB: Double? { vb.map { $0.reduce(0, +) / Double($0.count) } }
    }

    /// DiT's training loss for a model output on x_t = qSample(xStart, t, noise):
    /// loss = mean_i (mse_i + vb_i), where vb_i sees ε̂ as a constant (DiT detaches it), so the ε̂ half of the
    /// gradient comes from the MSE alone and the v half from the bound alone. With `frameMask` both
    /// terms are means over each sample's generated frames only, and the conditioning frames get no gradient (as
    /// Open-Sora's IDDPM `training_losses` with a mask).
    public func trainingLoss(modelOutput: Tensor, xStart: Tensor, xT: Tensor, noise: Tensor, timesteps: [Int],
                             frameMask: FrameMask? = nil, backend: any Backend) -> TrainingLoss {
        let batch = xStart.shape[0], channels = xStart.shape[1]
        precondition(timesteps.count == batch, "trainingLoss: \(timesteps.count) timesteps for batch \(batch)")
        let expected = [batch, learnSigma ? 2 * channels : channels] + xStart.shape.dropFirst(2)
        precondition(modelOutput.shape == expected,
                     "trainingLoss: model output \(modelOutput.shape), expected \(expected)")
        let halves = learnSigma ? backend.chunk(modelOutput, parts: 2, axis: 1) : [modelOutput]
        let (mse, dEpsilon) = FrameMask.meanSquaredError(halves[0], target: noise, mask: frameMask, backend: backend)
        guard learnSigma else {
            return TrainingLoss(loss: mse.reduce(0, +) / Double(batch), perSample: mse, mse: mse, vb: nil,
                                gradient: dEpsilon)
        }
        // The bound's terms as the MSE's: the conditioning frames' zeroed, each sample's mean over its generated
        // frames.
        let share = FrameMask.share(frameMask, batch: batch)
        let (fullVB, dVariance) = backend.variationalBound(
            epsilon: halves[0], varianceValues: halves[1], xStart: xStart, xT: xT,
            coefficients: timesteps.map { schedule.vlbCoefficients(at: $0) }, mask: frameMask?.tensor,
            weights: share.map { $0 / Double(batch) })
        let vb = zip(fullVB, share).map { $0 * $1 }
        let perSample = zip(mse, vb).map { $0 + $1 }
        return TrainingLoss(loss: perSample.reduce(0, +) / Double(batch), perSample: perSample, mse: mse, vb: vb,
                            gradient: backend.concat([dEpsilon, dVariance], axis: 1))
    }
}
