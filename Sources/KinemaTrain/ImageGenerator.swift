import KinemaData
import KinemaDiffusion
import KinemaModels
import KinemaTensor

/// Class-conditional sampling from a DiT: DDPM or DDIM over a respaced schedule, with classifier-free guidance.
public struct ImageGenerator {
    public enum Sampler: String, CaseIterable, Sendable {
        case ddpm, ddim
    }

    public var model: DiT
    public var sampler: Sampler
    public var steps: Int
    public var cfgScale: Double
    public var eta: Double
    /// Channels that guidance applies to; nil means every ε channel (DiT's sample script guides only 3 of its 4
    /// latent channels, a quirk we do not copy by default).
    public var guidedChannels: Int?
    /// Clip x_0 predictions to [-1, 1]: right for pixel-space models, whose data lives there.
    public var clipDenoised: Bool

    public init(model: DiT, sampler: Sampler = .ddim, steps: Int = 50, cfgScale: Double = 1, eta: Double = 0,
                guidedChannels: Int? = nil, clipDenoised: Bool? = nil) {
        self.model = model
        self.sampler = sampler
        self.steps = steps
        self.cfgScale = cfgScale
        self.eta = eta
        self.guidedChannels = guidedChannels
        self.clipDenoised = clipDenoised ?? (model.config.inChannels == 3)
    }

    /// Samples one image per label, as [N, C, H, W] in the model's dtype, from noise drawn with `seed`.
    public func generate(labels: [Int], seed: UInt64, progress: SamplingProgress? = nil) throws -> Tensor {
        let config = model.config, backend = model.backend
        for label in labels where label < 0 || label >= config.numClasses {
            throw GenerationError.badLabel(label, classes: config.numClasses)
        }
        let method: DiffusionSampler.Method = sampler == .ddpm ? .ddpm : .ddim(eta: eta)
        let diffusion = try DiffusionSampler(method: method, steps: steps, learnSigma: config.learnSigma,
                                             clipDenoised: clipDenoised)
        let model = self.model
        let conditional: ConditionalDenoiser = { x, timesteps, labels in
            model(x, timesteps: backend.upload(timesteps.map(Double.init), shape: [timesteps.count], dtype: model.ioDType),
                  labels: backend.upload(labels.map(Int32.init), shape: [labels.count]))
        }
        let denoiser = ClassifierFreeGuidance.denoiser(model: conditional, labels: labels, nullLabel: Int(model.nullClass),
                                                       scale: cfgScale, guidedChannels: guidedChannels, backend: backend)
        var random = RandomStream(seed: seed)
        return diffusion.sample(method, shape: [labels.count, config.inChannels, config.inputSize, config.inputSize],
                                dtype: model.ioDType, denoiser: denoiser, random: &random, backend: backend,
                                progress: progress)
    }

    /// Pixel-space samples in [-1, 1] as 8-bit images.
    public func images(_ samples: Tensor) -> [RGBImage] {
        precondition(samples.shape[1] == 3, "images: \(samples.shape[1]) channels are latents, not RGB; decode them first")
        let values = model.backend.download(samples)
        let side = samples.shape[2], size = 3 * side * samples.shape[3]
        return (0..<samples.shape[0]).map {
            RGBImage(chwFloats: values[($0 * size)..<(($0 + 1) * size)], width: samples.shape[3], height: side)
        }
    }
}

public enum GenerationError: Error, CustomStringConvertible {
    case badLabel(Int, classes: Int)
    case badSize(String)

    public var description: String {
        switch self {
        case .badLabel(let label, let classes): return "class \(label) is out of range: the model has classes 0..<\(classes)"
        case .badSize(let reason): return "cannot generate: \(reason)"
        }
    }
}

/// `kinema eval-synthetic`: sample N images per class of the synthetic shapes and score how many show the requested
/// colour and shape.
public struct SyntheticEvaluation {
    public struct Result: Sendable {
        public var accuracy: Double
        public var colourAccuracy: Double
        public var shapeAccuracy: Double
        public var perClass: [Double]
        public var images: [RGBImage]
        public var labels: [Int]
    }

    public static func run(generator: ImageGenerator, perClass: Int, seed: UInt64, batchSize: Int = 48,
                           progress: ((Int, Int) -> Void)? = nil) throws -> Result {
        let classes = SyntheticShapes.classCount
        guard generator.model.config.numClasses >= classes, generator.model.config.inChannels == 3 else {
            throw GenerationError.badLabel(classes - 1, classes: generator.model.config.numClasses)
        }
        let labels = (0..<classes).flatMap { [Int](repeating: $0, count: perClass) }
        var images: [RGBImage] = []
        for (chunkIndex, start) in stride(from: 0, to: labels.count, by: batchSize).enumerated() {
            let chunk = Array(labels[start..<min(start + batchSize, labels.count)])
            images += generator.images(try generator.generate(labels: chunk, seed: seed &+ UInt64(chunkIndex)))
            progress?(images.count, labels.count)
        }
        let classifier = SyntheticShapeClassifier()
        let predictions = images.map { classifier.predict($0) }
        var correct = [Int](repeating: 0, count: classes)
        var colours = 0, shapes = 0
        for (prediction, label) in zip(predictions, labels) {
            guard let prediction else { continue }
            let shapeRight = prediction.shape == SyntheticShapes.shape(ofLabel: label)
            let colourRight = prediction.colour == SyntheticShapes.colour(ofLabel: label)
            shapes += shapeRight ? 1 : 0
            colours += colourRight ? 1 : 0
            correct[label] += shapeRight && colourRight ? 1 : 0
        }
        let total = Double(labels.count)
        return Result(accuracy: Double(correct.reduce(0, +)) / total, colourAccuracy: Double(colours) / total,
                      shapeAccuracy: Double(shapes) / total, perClass: correct.map { Double($0) / Double(perClass) },
                      images: images, labels: labels)
    }
}
