import Foundation
import KinemaTensor

/// A model as a sampler sees it: the model output for x_t at the given ORIGINAL timesteps (one per sample),
/// shaped [B, 2C, …] with learned sigma or [B, C, …] without.
public typealias Denoiser = (_ x: Tensor, _ timesteps: [Int]) -> Tensor

/// Reports sampling progress: `step` of `total` steps done (1-based).
public typealias SamplingProgress = (_ step: Int, _ total: Int) -> Void

/// Ancestral (DDPM) and DDIM sampling over a respaced schedule, as IDDPM's `p_sample` and `ddim_sample`.
///
/// Step functions work with *indices* of the respaced schedule; the denoiser is always called with the original
/// timesteps `schedule.timestepMap[index]`. Every step takes its noise as an argument, so a test can feed a
/// reference implementation's noise; the loops draw it from the backend's Philox stream with offsets reserved from
/// a `RandomStream`, so a seed gives the same sample on every backend.
public struct DiffusionSampler: Sendable {
    public enum Method: Sendable, Equatable {
        case ddpm
        case ddim(eta: Double)
    }

    /// The (respaced) schedule the sampler walks, from index count−1 down to 0.
    public let schedule: NoiseSchedule
    public let learnSigma: Bool
    /// Clip the x_0 prediction to [−1, 1] (IDDPM's `clip_denoised`; DiT samples latents with it off).
    public var clipDenoised: Bool

    public init(schedule: NoiseSchedule, learnSigma: Bool = true, clipDenoised: Bool = false) {
        self.schedule = schedule
        self.learnSigma = learnSigma
        self.clipDenoised = clipDenoised
    }

    /// The sampler DiT's `--num-sampling-steps N` builds: respacing "N" for DDPM and "ddimN" for DDIM, of the
    /// linear 1000-step training schedule (the method only picks the respacing; η is given to the step or loop).
    public init(method: Method, steps: Int, trainingSteps: Int = 1000, learnSigma: Bool = true,
                clipDenoised: Bool = false) throws {
        let spec: String
        switch method {
        case .ddpm: spec = "\(steps)"
        case .ddim: spec = "ddim\(steps)"
        }
        self.init(schedule: try NoiseSchedule.linear(steps: trainingSteps).respaced(spec), learnSigma: learnSigma,
                  clipDenoised: clipDenoised)
    }

    /// The original timesteps of respaced indices.
    public func originalTimesteps(_ indices: [Int]) -> [Int] { indices.map { schedule.timestepMap[$0] } }

    // MARK: - p(x_{t-1} | x_t)

    /// IDDPM's `p_mean_variance` for ε prediction.
    public struct MeanVariance {
        /// Mean of p(x_{t-1} | x_t): the posterior mean with x_0 replaced by its prediction.
        public var mean: Tensor
        /// Log variance per element (learned range), or nil for the fixed-large variance, which is per sample:
        /// see `fixedLogVariance`.
        public var logVariance: Tensor?
        public var fixedLogVariance: [Double]
        public var predictedXStart: Tensor
    }

    /// Mean, variance and x_0 prediction at respaced `indices` from a model output.
    /// Learned range: log σ² = frac · log β_t + (1 − frac) · log σ²_posterior,clipped with frac = (v + 1) / 2.
    /// Fixed (no learned sigma): DiT's FIXED_LARGE, σ² = β_t, except σ²_posterior[1] at t = 0.
    public func meanVariance(modelOutput: Tensor, x: Tensor, indices: [Int], backend: any Backend) -> MeanVariance {
        meanVariance(modelOutput: modelOutput, x: x, indices: indices, backend: backend, withVariance: true)
    }

    /// `withVariance: false` skips the learned log variance (DDIM ignores it); `logVariance` is then nil.
    func meanVariance(modelOutput: Tensor, x: Tensor, indices: [Int], backend: any Backend,
                      withVariance: Bool) -> MeanVariance {
        let batch = x.shape[0], channels = x.shape[1]
        precondition(indices.count == batch, "meanVariance: \(indices.count) indices for batch \(batch)")
        let expected = [batch, learnSigma ? 2 * channels : channels] + x.shape.dropFirst(2)
        precondition(modelOutput.shape == expected, "meanVariance: model output \(modelOutput.shape), expected \(expected)")
        let epsilon: Tensor
        var logVariance: Tensor? = nil
        var fixed = [Double](repeating: 0, count: batch)
        if learnSigma {
            epsilon = backend.narrow(modelOutput, axis: 1, start: 0, length: channels)
        } else {
            epsilon = modelOutput
            fixed = indices.map { $0 == 0 ? schedule.posteriorLogVarianceClipped[0] : schedule.logBetas[$0] }
        }
        if learnSigma && withVariance {
            let varianceValues = backend.narrow(modelOutput, axis: 1, start: channels, length: channels)
            let minLog = indices.map { schedule.posteriorLogVarianceClipped[$0] }
            let maxLog = indices.map { schedule.logBetas[$0] }
            // frac·max + (1 − frac)·min with frac = (v + 1)/2  ==  v·(max − min)/2 + (max + min)/2.
            let ones = backend.empty(x.shape, dtype: x.dtype)
            backend.fill(ones, with: 1)
            logVariance = backend.rowwiseAxpby(zip(maxLog, minLog).map { ($0 - $1) / 2 }, varianceValues,
                                               zip(maxLog, minLog).map { ($0 + $1) / 2 }, ones)
        }
        var xStart = backend.rowwiseAxpby(indices.map { schedule.sqrtRecipAlphasCumprod[$0] }, x,
                                          indices.map { -schedule.sqrtRecipM1AlphasCumprod[$0] }, epsilon)
        if clipDenoised { xStart = backend.clamp(xStart, min: -1, max: 1) }
        let mean = backend.rowwiseAxpby(indices.map { schedule.posteriorMeanCoef1[$0] }, xStart,
                                        indices.map { schedule.posteriorMeanCoef2[$0] }, x)
        return MeanVariance(mean: mean, logVariance: logVariance, fixedLogVariance: fixed, predictedXStart: xStart)
    }

    public struct StepResult {
        public var sample: Tensor
        public var predictedXStart: Tensor
    }

    // MARK: - DDPM

    /// IDDPM's `p_sample`: x_{t-1} = mean + σ · noise, with no noise for samples at index 0.
    /// `noise` may be nil only when every index is 0.
    public func ddpmStep(x: Tensor, indices: [Int], modelOutput: Tensor, noise: Tensor?,
                         backend: any Backend) -> StepResult {
        let out = meanVariance(modelOutput: modelOutput, x: x, indices: indices, backend: backend)
        let mask = indices.map { $0 != 0 ? 1.0 : 0.0 }
        guard mask.contains(1) else { return StepResult(sample: out.mean, predictedXStart: out.predictedXStart) }
        guard let noise else { preconditionFailure("ddpmStep: noise is needed at indices \(indices)") }
        precondition(noise.shape == x.shape, "ddpmStep: noise \(noise.shape) for x \(x.shape)")
        let ones = [Double](repeating: 1, count: indices.count)
        let sample: Tensor
        if let logVariance = out.logVariance {
            let sigma = backend.unary(.exp, backend.affine(logVariance, scale: 0.5, shift: 0))
            sample = backend.rowwiseAxpby(ones, out.mean, mask, backend.mul(sigma, noise))
        } else {
            let sigma = zip(mask, out.fixedLogVariance).map { $0 * Foundation.exp(0.5 * $1) }
            sample = backend.rowwiseAxpby(ones, out.mean, sigma, noise)
        }
        return StepResult(sample: sample, predictedXStart: out.predictedXStart)
    }

    // MARK: - DDIM

    /// IDDPM's `ddim_sample`: with x_0 from `meanVariance` (clipped if asked) and ε re-derived from it,
    /// σ = η · √((1 − ᾱ_prev)/(1 − ᾱ)) · √(1 − ᾱ/ᾱ_prev), x_prev = √ᾱ_prev · x_0 + √(1 − ᾱ_prev − σ²) · ε + σ · noise,
    /// with no noise at index 0. `noise` may be nil when η = 0 or every index is 0.
    public func ddimStep(x: Tensor, indices: [Int], modelOutput: Tensor, eta: Double, noise: Tensor?,
                         backend: any Backend) -> StepResult {
        let out = meanVariance(modelOutput: modelOutput, x: x, indices: indices, backend: backend, withVariance: false)
        let xStart = out.predictedXStart
        let recip = indices.map { schedule.sqrtRecipAlphasCumprod[$0] }
        let recipM1 = indices.map { schedule.sqrtRecipM1AlphasCumprod[$0] }
        // ε = (√(1/ᾱ) · x_t − x_0) / √(1/ᾱ − 1)
        let epsilon = backend.rowwiseAxpby(zip(recip, recipM1).map { $0 / $1 }, x, recipM1.map { -1 / $0 }, xStart)
        let alphaBar = indices.map { schedule.alphasCumprod[$0] }
        let alphaBarPrev = indices.map { schedule.alphasCumprodPrev[$0] }
        let sigma = (0..<indices.count).map { i in
            eta * ((1 - alphaBarPrev[i]) / (1 - alphaBar[i])).squareRoot() * (1 - alphaBar[i] / alphaBarPrev[i]).squareRoot()
        }
        let meanPrediction = backend.rowwiseAxpby(alphaBarPrev.map { $0.squareRoot() }, xStart,
                                                  (0..<indices.count).map { (1 - alphaBarPrev[$0] - sigma[$0] * sigma[$0]).squareRoot() },
                                                  epsilon)
        let noiseScale = zip(indices, sigma).map { $0 != 0 ? $1 : 0 }
        guard noiseScale.contains(where: { $0 != 0 }) else {
            return StepResult(sample: meanPrediction, predictedXStart: xStart)
        }
        guard let noise else { preconditionFailure("ddimStep: noise is needed for eta \(eta) at indices \(indices)") }
        precondition(noise.shape == x.shape, "ddimStep: noise \(noise.shape) for x \(x.shape)")
        let sample = backend.rowwiseAxpby([Double](repeating: 1, count: indices.count), meanPrediction, noiseScale, noise)
        return StepResult(sample: sample, predictedXStart: xStart)
    }

    /// Whether a step at `index` with `method` adds noise (so the loop must draw some).
    func needsNoise(_ method: Method, index: Int) -> Bool {
        guard index != 0 else { return false }
        switch method {
        case .ddpm: return true
        case .ddim(let eta): return eta != 0
        }
    }

    // MARK: - Loops

    /// One step of `method` at respaced `indices` (one per sample), calling the denoiser with the original
    /// timesteps.
    public func step(_ method: Method, x: Tensor, indices: [Int], denoiser: Denoiser, noise: Tensor?,
                     backend: any Backend) -> StepResult {
        let output = denoiser(x, originalTimesteps(indices))
        switch method {
        case .ddpm: return ddpmStep(x: x, indices: indices, modelOutput: output, noise: noise, backend: backend)
        case .ddim(let eta):
            return ddimStep(x: x, indices: indices, modelOutput: output, eta: eta, noise: noise, backend: backend)
        }
    }

    /// The full reverse process from x_T (`initialNoise`, or standard normal noise drawn from `random`) down to x_0.
    /// Noise for each step is drawn with `backend.randomNormal(seed: random.seed, offset: random.reserveNormals(n))`;
    /// steps that add no noise draw nothing. `condition` (video latents shaped `shape` and a frame mask,
    /// `FrameMask`): the conditioning frames start at, and after every step return to, the given latents, as the
    /// model saw them clean in training (image-to-video).
    public func sample(_ method: Method, shape: [Int], dtype: DType = .f32, denoiser: Denoiser,
                       random: inout RandomStream, initialNoise: Tensor? = nil,
                       condition: (latents: Tensor, frameMask: [[Bool]])? = nil, backend: any Backend,
                       progress: SamplingProgress? = nil) -> Tensor {
        let count = shape.reduce(1, *)
        var x: Tensor
        if let initialNoise {
            precondition(initialNoise.shape == shape, "sample: initial noise \(initialNoise.shape) for shape \(shape)")
            x = initialNoise
        } else {
            x = backend.randomNormal(shape, dtype: dtype, seed: random.seed, offset: random.reserveNormals(count))
        }
        precondition(condition.map { $0.latents.shape == shape } ?? true,
                     "sample: condition \(condition?.latents.shape ?? []) for shape \(shape)")
        let keep = FrameMask.holding(condition, backend: backend)
        x = keep(x)
        let total = schedule.count
        for (done, index) in (0..<total).reversed().enumerated() {
            var noise: Tensor? = nil
            if needsNoise(method, index: index) {
                noise = backend.randomNormal(shape, dtype: x.dtype, seed: random.seed, offset: random.reserveNormals(count))
            }
            x = keep(step(method, x: x, indices: [Int](repeating: index, count: shape[0]), denoiser: denoiser,
                          noise: noise, backend: backend).sample)
            progress?(done + 1, total)
        }
        return x
    }

    /// DDPM ancestral sampling (IDDPM's `p_sample_loop`).
    public func ddpmLoop(shape: [Int], dtype: DType = .f32, denoiser: Denoiser, random: inout RandomStream,
                         initialNoise: Tensor? = nil, backend: any Backend, progress: SamplingProgress? = nil) -> Tensor {
        sample(.ddpm, shape: shape, dtype: dtype, denoiser: denoiser, random: &random, initialNoise: initialNoise,
               backend: backend, progress: progress)
    }

    /// DDIM sampling (IDDPM's `ddim_sample_loop`).
    public func ddimLoop(shape: [Int], dtype: DType = .f32, eta: Double = 0, denoiser: Denoiser,
                         random: inout RandomStream, initialNoise: Tensor? = nil, backend: any Backend,
                         progress: SamplingProgress? = nil) -> Tensor {
        sample(.ddim(eta: eta), shape: shape, dtype: dtype, denoiser: denoiser, random: &random,
               initialNoise: initialNoise, backend: backend, progress: progress)
    }
}
