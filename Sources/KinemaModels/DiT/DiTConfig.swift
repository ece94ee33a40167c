import Foundation

/// The shape of a DiT (Peebles & Xie, "Scalable Diffusion Models with Transformers"). The twelve configurations of
/// the paper are `DiT-{S,B,L,XL}/{2,4,8}`; `tiny` sizes are for tests and the CPU demo.
public struct DiTConfig: Codable, Equatable, Sendable {
    public var inputSize: Int          // latent (or pixel) side length
    public var patchSize: Int
    public var inChannels: Int
    public var hiddenSize: Int
    public var depth: Int
    public var numHeads: Int
    public var mlpRatio: Double
    public var numClasses: Int
    public var learnSigma: Bool
    public var classDropoutProb: Double
    /// ε of the LayerNorm before each MLP: 1e-6 in the original DiT, the config's `norm_eps` (1e-5) in diffusers.
    public var mlpNormEps: Double
    /// Timestep frequencies are maxPeriod^(-i / (half - shift)): 0 in the original DiT, 1 in diffusers.
    public var timestepFrequencyShift: Double

    public init(inputSize: Int, patchSize: Int, inChannels: Int = 4, hiddenSize: Int, depth: Int, numHeads: Int,
                mlpRatio: Double = 4, numClasses: Int = 1000, learnSigma: Bool = true, classDropoutProb: Double = 0.1,
                mlpNormEps: Double = 1e-6, timestepFrequencyShift: Double = 0) {
        self.inputSize = inputSize
        self.patchSize = patchSize
        self.inChannels = inChannels
        self.hiddenSize = hiddenSize
        self.depth = depth
        self.numHeads = numHeads
        self.mlpRatio = mlpRatio
        self.numClasses = numClasses
        self.learnSigma = learnSigma
        self.classDropoutProb = classDropoutProb
        self.mlpNormEps = mlpNormEps
        self.timestepFrequencyShift = timestepFrequencyShift
    }

    public var outChannels: Int { learnSigma ? 2 * inChannels : inChannels }
    public var gridSize: Int { inputSize / patchSize }
    public var tokenCount: Int { gridSize * gridSize }
    public var mlpHiddenSize: Int { Int(Double(hiddenSize) * mlpRatio) }

    /// Checks the numbers fit together; throws a message naming the field.
    public func validate() throws {
        func fail(_ reason: String) -> ModelError { .invalidConfig(reason) }
        guard patchSize > 0, inputSize % patchSize == 0 else {
            throw fail("input size \(inputSize) is not a multiple of patch size \(patchSize)")
        }
        guard numHeads > 0, hiddenSize % numHeads == 0 else {
            throw fail("hidden size \(hiddenSize) is not divisible by \(numHeads) heads")
        }
        guard hiddenSize % 4 == 0 else { throw fail("hidden size \(hiddenSize) must be a multiple of 4 (2D sin-cos positions)") }
        guard depth > 0, numClasses > 0, inChannels > 0 else { throw fail("depth, classes and channels must be positive") }
    }

    /// The paper's model sizes (Table 1): depth, hidden size, heads.
    static let paperSizes: [String: (depth: Int, hidden: Int, heads: Int)] = [
        "S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16),
    ]

    /// The heads of a checkpoint whose width is `hidden` (heads are in no tensor's shape): `given` when there is one,
    /// else the paper's for that width (S 6, B 12, L 16, XL 16), as every DiT-family release uses them. `path` names
    /// the file in the error.
    static func heads(given: Int?, hidden: Int, path: String) throws -> Int {
        guard let heads = given ?? paperSizes.values.first(where: { $0.hidden == hidden })?.heads else {
            throw ModelError.badCheckpoint(path: path, reason: "the number of attention heads cannot be read off the "
                + "weights for hidden size \(hidden) (no paper size has it); pass --num-heads")
        }
        return heads
    }

    /// All twelve names of the paper, e.g. "DiT-XL/2".
    public static var paperNames: [String] {
        ["S", "B", "L", "XL"].flatMap { size in [2, 4, 8].map { "DiT-\(size)/\($0)" } }
    }

    /// A paper configuration by name ("DiT-XL/2", "DiT-S/8", …) for `inputSize` latents (256 px → 32).
    public static func named(_ name: String, inputSize: Int = 32, inChannels: Int = 4, numClasses: Int = 1000,
                             learnSigma: Bool = true) throws -> DiTConfig {
        let parts = name.hasPrefix("DiT-") ? name.dropFirst(4).split(separator: "/") : []
        guard parts.count == 2, let size = paperSizes[String(parts[0])], let patch = Int(parts[1]), [2, 4, 8].contains(patch)
        else {
            throw ModelError.invalidConfig("unknown model '\(name)'; choose one of \(paperNames.joined(separator: ", "))")
        }
        return DiTConfig(inputSize: inputSize, patchSize: patch, inChannels: inChannels, hiddenSize: size.hidden,
                         depth: size.depth, numHeads: size.heads, numClasses: numClasses, learnSigma: learnSigma)
    }

    /// Trainable parameters (the fixed positional table excluded), without building the model.
    public var parameterCount: Int {
        let d = hiddenSize, h = mlpHiddenSize, patchOut = patchSize * patchSize * outChannels
        let labelRows = numClasses + (classDropoutProb > 0 ? 1 : 0)
        let embedders = d * inChannels * patchSize * patchSize + d + 256 * d + d + d * d + d + labelRows * d
        let block = 3 * d * d + 3 * d + d * d + d + d * h + h + h * d + d + 6 * d * d + 6 * d
        return embedders + depth * block + 2 * d * d + 2 * d + d * patchOut + patchOut
    }

    /// Counted forward FLOPs per sample (2 per multiply-add; attention 4·N²·D per layer), as ../DESIGN.md counts them.
    public var forwardFLOPs: Double {
        let n = Double(tokenCount), d = Double(hiddenSize), mlp = Double(mlpHiddenSize)
        let patchIn = Double(inChannels * patchSize * patchSize), patchOut = Double(outChannels * patchSize * patchSize)
        let perBlock = 2 * n * d * (3 * d) + 4 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * mlp + 2 * d * 6 * d
        return 2 * n * patchIn * d + Double(depth) * perBlock + 2 * n * d * patchOut + 2 * d * 2 * d
            + 2 * (256 * d + d * d)
    }
}

public enum ModelError: Error, CustomStringConvertible {
    case invalidConfig(String)
    case badCheckpoint(path: String, reason: String)

    public var description: String {
        switch self {
        case .invalidConfig(let reason): return "invalid model configuration: \(reason)"
        case .badCheckpoint(let path, let reason): return "cannot load checkpoint \(path): \(reason)"
        }
    }
}
