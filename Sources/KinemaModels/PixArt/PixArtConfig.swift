import Foundation

/// The shape of a PixArt-α style text-to-image transformer (diffusers `PixArtTransformer2DModel` with
/// `norm_type="ada_norm_single"`): adaLN-single timestep conditioning, self-attention, cross-attention to projected
/// caption states, and a GELU (tanh) feed-forward in every block.
public struct PixArtConfig: Codable, Equatable, Sendable {
    /// The latent size the model was trained at (diffusers' `sample_size`): it fixes the positional embedding's base
    /// grid; any other size (a multiple of the patch) also runs.
    public var sampleSize: Int
    public var patchSize: Int
    public var inChannels: Int
    public var outChannels: Int
    public var hiddenSize: Int
    public var depth: Int
    public var numHeads: Int
    /// Width of the caption states before `caption_projection` (T5-XXL: 4096).
    public var captionChannels: Int
    public var mlpHidden: Int
    /// q/k/v biases (`attention_bias`).
    public var attentionBias: Bool
    public var normEps: Double
    /// diffusers' `interpolation_scale` (nil there means max(sampleSize / 64, 1)).
    public var interpolationScale: Double
    /// The probability of replacing a caption by the null caption in training (classifier-free guidance).
    public var captionDropoutProb: Double

    public init(sampleSize: Int, patchSize: Int = 2, inChannels: Int = 4, outChannels: Int = 8, hiddenSize: Int,
                depth: Int, numHeads: Int, captionChannels: Int, mlpHidden: Int? = nil, attentionBias: Bool = true,
                normEps: Double = 1e-6, interpolationScale: Double? = nil, captionDropoutProb: Double = 0.1) {
        self.sampleSize = sampleSize
        self.patchSize = patchSize
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.hiddenSize = hiddenSize
        self.depth = depth
        self.numHeads = numHeads
        self.captionChannels = captionChannels
        self.mlpHidden = mlpHidden ?? 4 * hiddenSize
        self.attentionBias = attentionBias
        self.normEps = normEps
        self.interpolationScale = interpolationScale ?? Double(max(sampleSize / 64, 1))
        self.captionDropoutProb = captionDropoutProb
    }

    /// The grid of patches at the training size: the positional embedding's base size.
    public var baseGrid: Int { sampleSize / patchSize }

    public func validate() throws {
        func fail(_ reason: String) -> ModelError { .invalidConfig("PixArt: \(reason)") }
        guard patchSize > 0, sampleSize > 0, sampleSize % patchSize == 0 else {
            throw fail("sample size \(sampleSize) is not a positive multiple of the patch size \(patchSize)")
        }
        guard numHeads > 0, hiddenSize % numHeads == 0, hiddenSize % 4 == 0 else {
            throw fail("hidden size \(hiddenSize) must be a multiple of 4 and of the \(numHeads) heads")
        }
        guard depth > 0, inChannels > 0, outChannels > 0, captionChannels > 0, mlpHidden > 0 else {
            throw fail("depth, channels, caption channels and MLP width must be positive")
        }
        guard captionDropoutProb >= 0 && captionDropoutProb < 1 else {
            throw fail("caption dropout \(captionDropoutProb) is not in [0, 1)")
        }
    }

    /// A diffusers `PixArtTransformer2DModel` config.json (`mlpHidden` read off the checkpoint's feed-forward).
    init(diffusersConfig json: [String: Any], path: String, mlpHidden: Int) throws {
        func int(_ key: String) throws -> Int {
            guard let value = json[key] as? NSNumber else {
                throw ModelError.badCheckpoint(path: path, reason: "config.json lacks integer '\(key)'")
            }
            return value.intValue
        }
        if let norm = json["norm_type"] as? String, norm != "ada_norm_single" {
            throw ModelError.badCheckpoint(path: path, reason: "norm_type '\(norm)' is not PixArt's ada_norm_single")
        }
        if (json["use_additional_conditions"] as? NSNumber)?.boolValue == true {
            throw ModelError.badCheckpoint(path: path, reason: "resolution and aspect-ratio conditions "
                + "(use_additional_conditions, PixArt-α 1024 px) are not supported")
        }
        if let activation = json["activation_fn"] as? String, activation != "gelu-approximate" {
            throw ModelError.badCheckpoint(path: path, reason: "activation_fn '\(activation)' is not gelu-approximate")
        }
        let heads = try int("num_attention_heads"), hidden = heads * (try int("attention_head_dim"))
        let inChannels = try int("in_channels")
        if let cross = (json["cross_attention_dim"] as? NSNumber)?.intValue, cross != hidden {
            throw ModelError.badCheckpoint(path: path, reason: "cross_attention_dim \(cross) differs from the hidden "
                + "size \(hidden); PixArt projects captions to the hidden size")
        }
        self.init(sampleSize: try int("sample_size"), patchSize: try int("patch_size"), inChannels: inChannels,
                  outChannels: (json["out_channels"] as? NSNumber)?.intValue ?? inChannels, hiddenSize: hidden,
                  depth: try int("num_layers"), numHeads: heads, captionChannels: try int("caption_channels"),
                  mlpHidden: mlpHidden, attentionBias: (json["attention_bias"] as? NSNumber)?.boolValue ?? true,
                  normEps: (json["norm_eps"] as? NSNumber)?.doubleValue ?? 1e-6,
                  interpolationScale: (json["interpolation_scale"] as? NSNumber)?.doubleValue)
        try validate()
    }
}

extension PixArtConfig {
    /// Latte's sizes (the Latte paper's S/B/L/XL, patch 2; PixArt-α's XL is the same width and depth), with T5-XXL
    /// caption states (4096 wide) and a learned-sigma output, at latent size `sampleSize`.
    public static let latteNames = ["Latte-S/2", "Latte-B/2", "Latte-L/2", "Latte-XL/2"]
    /// Open-Sora 1.0's one size (its STDiT-XL/2 is Latte-XL/2's width and depth).
    public static let stditNames = ["STDiT-XL/2"]

    public static func latte(_ name: String, sampleSize: Int = 32, captionChannels: Int = 4096) throws -> PixArtConfig {
        let sizes: [String: (hidden: Int, depth: Int, heads: Int)] = [
            "Latte-S/2": (384, 12, 6), "Latte-B/2": (768, 12, 12), "Latte-L/2": (1024, 24, 16),
            "Latte-XL/2": (1152, 28, 16), "STDiT-XL/2": (1152, 28, 16),
        ]
        guard let size = sizes[name] else {
            throw ModelError.invalidConfig("unknown model '\(name)'; video models: "
                                           + (latteNames + stditNames).joined(separator: ", "))
        }
        let config = PixArtConfig(sampleSize: sampleSize, patchSize: 2, inChannels: 4, outChannels: 8,
                                  hiddenSize: size.hidden, depth: size.depth, numHeads: size.heads,
                                  captionChannels: captionChannels)
        try config.validate()
        return config
    }

    /// Counted forward FLOPs of one sample (DESIGN.md: 2 per multiply-add; attention 4·Nq·Nk·D): `frames` frames of
    /// a `gridHeight` × `gridWidth` patch grid and `captionLength` caption tokens. `temporal` adds Latte's temporal
    /// block after each spatial one; a PixArt image is frames = 1 without it. The per-frame cross-attention keys
    /// and values are counted once per video, as they are computed (per video, then repeated).
    public func forwardFLOPs(frames: Int, gridHeight: Int, gridWidth: Int, captionLength: Int,
                             temporal: Bool) -> Double {
        let d = Double(hiddenSize), n = Double(gridHeight * gridWidth), f = Double(frames), l = Double(captionLength)
        let tokens = f * n
        let patchEmbed = 2 * tokens * Double(inChannels * patchSize * patchSize) * d
        let captions = 2 * l * (Double(captionChannels) * d + d * d)
        let adaLN = 2 * (256 * d + d * d + d * 6 * d)
        let feedForward = 2 * tokens * 2 * d * Double(mlpHidden)
        let selfAttention = 2 * tokens * 4 * d * d + 4 * f * n * n * d
        let crossAttention = 2 * tokens * 2 * d * d + 2 * l * 2 * d * d + 4 * f * n * l * d
        let temporalBlock = temporal ? 2 * tokens * 4 * d * d + 4 * n * f * f * d + feedForward : 0
        let finalLayer = 2 * tokens * d * Double(patchSize * patchSize * outChannels)
        return patchEmbed + captions + adaLN + finalLayer
            + Double(depth) * (selfAttention + crossAttention + feedForward + temporalBlock)
    }
}
