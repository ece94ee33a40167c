import Foundation
import KinemaTensor

/// A velocity model as the rectified-flow sampler sees it: the output for x_t at continuous timesteps t ∈ [0, T]
/// (one per sample; T = `RectifiedFlow.trainingSteps` is pure noise), shaped like x ([B, C, …]) or with a second,
/// ignored half of channels ([B, 2C, …], a model built with learned sigma).
public typealias VelocityModel = (_ x: Tensor, _ timesteps: [Double]) -> Tensor

/// Rectified flow as Open-Sora 1.2 trains and samples it (`opensora/schedulers/rf`): the straight path
/// x_t = (1 − t/T) · x_0 + (t/T) · ε between data (t = 0) and noise (t = T), a model that predicts the velocity
/// v = x_0 − ε, timesteps drawn uniformly or logit-normally and optionally shifted toward the noise end for larger
/// (and longer) inputs, and Euler steps from t = T down to 0.
///
/// Frame masks (image-to-video, `FrameMask`): a conditioning frame stays clean in x_t (it is at t = 0), is left out
/// of the loss, and is held at its given latents through sampling.
public struct RectifiedFlow: Sendable, Equatable {
    public enum TimestepSampling: Sendable, Equatable {
        /// t/T uniform on [0, 1).
        case uniform
        /// t/T = sigmoid(location + scale · n), n standard normal (torch's LogisticNormal, as Open-Sora draws it).
        case logitNormal(location: Double, scale: Double)
    }

    /// Open-Sora's `timestep_transform`: t/T ↦ r·t/(1 + (r − 1)·t) with r = √(pixels / basePixels) ·
    /// √(frames / baseFrames) · scale, which spends more of training and sampling near the noise end as inputs
    /// grow. `pixels` is the video's height × width; `frames` the latent frame count (Open-Sora passes its VAE's:
    /// 1 for an image, num_frames / 17 · 5 for a video; with a per-frame VAE it is the frame count itself).
    public struct ResolutionShift: Codable, Sendable, Equatable {
        public var basePixels: Double
        public var baseFrames: Double
        public var scale: Double

        public init(basePixels: Double = 512 * 512, baseFrames: Double = 1, scale: Double = 1) {
            self.basePixels = basePixels
            self.baseFrames = baseFrames
            self.scale = scale
        }

        public func ratio(height: Int, width: Int, frames: Int) -> Double {
            (Double(height * width) / basePixels).squareRoot() * (Double(frames) / baseFrames).squareRoot() * scale
        }
    }

    /// The size of the input the shift is computed for (pixels of the decoded video, latent frames).
    public struct InputSize: Sendable, Equatable {
        public var height: Int, width: Int, frames: Int

        public init(height: Int, width: Int, frames: Int) {
            self.height = height
            self.width = width
            self.frames = frames
        }
    }

    /// T: timesteps run over [0, T] (Open-Sora's num_timesteps, 1000); the model sees t on this scale.
    public var trainingSteps: Double
    public var sampling: TimestepSampling
    /// nil: no shift (Open-Sora's `use_timestep_transform=False`).
    public var shift: ResolutionShift?

    public init(trainingSteps: Double = 1000, sampling: TimestepSampling = .logitNormal(location: 0, scale: 1),
                shift: ResolutionShift? = ResolutionShift()) {
        precondition(trainingSteps > 0, "RectifiedFlow: trainingSteps must be positive, got \(trainingSteps)")
        self.trainingSteps = trainingSteps
        self.sampling = sampling
        self.shift = shift
    }

    /// A timestep t ∈ [0, T] moved by the shift for an input of `size` (unchanged without a shift).
    public func shifted(_ t: Double, for size: InputSize) -> Double {
        guard let shift else { return t }
        let r = shift.ratio(height: size.height, width: size.width, frames: size.frames)
        let unit = t / trainingSteps
        return r * unit / (1 + (r - 1) * unit) * trainingSteps
    }

    // MARK: - Training

    /// One timestep per sample on [0, T], drawn from `random` by `sampling` and shifted for `size`.
    public func sampleTimesteps(batch: Int, size: InputSize, random: inout RandomStream) -> [Double] {
        (0..<batch).map { _ in
            let unit: Double
            switch sampling {
            case .uniform:
                unit = Double(random.nextUniform())
            case .logitNormal(let location, let scale):
                unit = 1 / (1 + exp(-(location + scale * Self.standardNormal(&random))))
            }
            return shifted(unit * trainingSteps, for: size)
        }
    }

    /// x_t = (1 − t/T) · x_0 + (t/T) · ε per sample; conditioning frames (`frameMask`'s false ones) keep x_0.
    public func interpolate(_ xStart: Tensor, noise: Tensor, timesteps: [Double], frameMask: FrameMask? = nil,
                            backend: any Backend) -> Tensor {
        precondition(timesteps.count == xStart.shape[0],
                     "RectifiedFlow.interpolate: \(timesteps.count) timesteps for batch \(xStart.shape[0])")
        precondition(noise.shape == xStart.shape, "RectifiedFlow.interpolate: noise \(noise.shape) for x \(xStart.shape)")
        let xT = backend.rowwiseAxpby(timesteps.map { 1 - $0 / trainingSteps }, xStart,
                                      timesteps.map { $0 / trainingSteps }, noise)
        return frameMask?.keepConditioningFrames(xT, clean: xStart, backend: backend) ?? xT
    }

    /// Everything a training step needs before the model runs: timesteps, standard normal noise from the device
    /// stream (offset reserved from `random`, so every backend draws the same values) and x_t.
    public func noisedBatch(_ xStart: Tensor, size: InputSize, frameMask: FrameMask? = nil, random: inout RandomStream,
                            backend: any Backend) -> (timesteps: [Double], noise: Tensor, xT: Tensor) {
        let timesteps = sampleTimesteps(batch: xStart.shape[0], size: size, random: &random)
        let offset = random.reserveNormals(xStart.count)
        let noise = backend.randomNormal(xStart.shape, dtype: xStart.dtype, seed: random.seed, offset: offset)
        return (timesteps, noise,
                interpolate(xStart, noise: noise, timesteps: timesteps, frameMask: frameMask, backend: backend))
    }

    /// The loss of one batch and its gradient with respect to the model output.
    public struct TrainingLoss {
        /// Mean over the batch of `perSample`.
        public var loss: Double
        /// Per sample: mean over the generated frames' elements of (v̂ − (x_0 − ε))².
        public var perSample: [Double]
        /// d loss / d model output, shaped like the model output.
        public var gradient: Tensor
    }

    /// Open-Sora's `training_losses`: the velocity half of the model output (the first C channels of a [B, 2C, …]
    /// output; the second half gets zero gradient) against x_0 − ε, averaged per sample over the elements of its
    /// generated frames (`mean_flat` with a mask), then over the batch.
    public func trainingLoss(modelOutput: Tensor, xStart: Tensor, noise: Tensor, frameMask: FrameMask? = nil,
                             backend: any Backend) -> TrainingLoss {
        let batch = xStart.shape[0], channels = xStart.shape[1]
        let rest = Array(xStart.shape.dropFirst(2))
        precondition(modelOutput.shape == [batch, channels] + rest || modelOutput.shape == [batch, 2 * channels] + rest,
                     "RectifiedFlow.trainingLoss: model output \(modelOutput.shape) for x \(xStart.shape)")
        let learnsSigma = modelOutput.shape[1] == 2 * channels
        let velocity = learnsSigma ? backend.chunk(modelOutput, parts: 2, axis: 1)[0] : modelOutput
        let (perSample, dVelocity) = FrameMask.meanSquaredError(velocity, target: backend.sub(xStart, noise),
                                                                mask: frameMask, backend: backend)
        let gradient = learnsSigma
            ? backend.concat([dVelocity, backend.zeros(dVelocity.shape, dtype: dVelocity.dtype)], axis: 1)
            : dVelocity
        return TrainingLoss(loss: perSample.reduce(0, +) / Double(batch), perSample: perSample, gradient: gradient)
    }

    // MARK: - Sampling

    /// The Euler sampler's timesteps: t_i = (1 − i/steps) · T for i < steps, each shifted for `size`.
    public func samplingTimesteps(steps: Int, size: InputSize) -> [Double] {
        precondition(steps > 0, "RectifiedFlow: sampling needs at least one step, got \(steps)")
        return (0..<steps).map { shifted((1 - Double($0) / Double(steps)) * trainingSteps, for: size) }
    }

    /// Euler integration of dx/dt = −v from x_T = `noise` down to t = 0 (Open-Sora's RFLOW.sample without its
    /// guidance, which a guided `model` supplies): x ← x + v̂ · (t_i − t_{i+1})/T, the last step to t = 0.
    /// `condition`: clean latents [B, C, F, H, W] and frame mask; the conditioning frames start at and stay at the
    /// given latents.
    public func sample(noise: Tensor, steps: Int, size: InputSize, model: VelocityModel,
                       condition: (latents: Tensor, frameMask: [[Bool]])? = nil, backend: any Backend,
                       progress: SamplingProgress? = nil) -> Tensor {
        let timesteps = samplingTimesteps(steps: steps, size: size)
        let batch = noise.shape[0], channels = noise.shape[1]
        precondition(condition.map { $0.latents.shape == noise.shape } ?? true,
                     "RectifiedFlow.sample: condition \(condition?.latents.shape ?? []) for noise \(noise.shape)")
        let keep = FrameMask.holding(condition, backend: backend)
        var x = keep(noise)
        for (i, t) in timesteps.enumerated() {
            let output = model(x, [Double](repeating: t, count: batch))
            let velocity = output.shape[1] == channels ? output : backend.narrow(output, axis: 1, start: 0, length: channels)
            precondition(velocity.shape == x.shape, "RectifiedFlow.sample: model output \(output.shape) for x \(x.shape)")
            let next = i + 1 < timesteps.count ? timesteps[i + 1] : 0
            let dt = (t - next) / trainingSteps
            x = keep(backend.rowwiseAxpby([Double](repeating: 1, count: batch), x, [Double](repeating: dt, count: batch),
                                          velocity))
            progress?(i + 1, timesteps.count)
        }
        return x
    }

    // MARK: - Helpers

    /// A standard normal draw on the host (Box–Muller from two of the stream's uniforms).
    static func standardNormal(_ random: inout RandomStream) -> Double {
        let u1 = max(Double(random.nextUniform()), 1e-12), u2 = Double(random.nextUniform())
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}
