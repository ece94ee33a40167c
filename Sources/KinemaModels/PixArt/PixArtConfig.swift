import Foundation

/// The shape of a PixArt-α style text-to-image transformer (diffusers `PixArtTransformer2DModel` with
/// `norm_type="ada_norm_single"`): adaLN-single timestep conditioning, self-attention, cross-attention to projected
/// caption states, and a GELU (tanh) feed-forward in every block.
public struct PixArtConfig: Equatable, Sendable {
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
