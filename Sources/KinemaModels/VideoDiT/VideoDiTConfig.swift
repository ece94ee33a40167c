import Foundation

/// The shape of a video DiT with 3D patches and full attention over every frame's patches together (OpenDiT's
/// vDiT: `vDiT-XL/222` is DiT-XL with 2×2×2 patches), conditioned on text by one of the three structures of the
/// DiT paper, chosen here:
///   adaLN-zero: the caption states pooled (mean over the unmasked tokens; a CLIP pooled vector is one token) and
///               projected, added to the timestep embedding that modulates every block (OpenDiT's vDiT);
///   cross-attention: every block attends to the projected caption tokens after its self-attention;
///   in-context: the projected caption tokens join the sequence in front of the video tokens and leave it before
///               the final layer.
public struct VideoDiTConfig: Codable, Equatable, Sendable {
    public enum Conditioning: String, Codable, Sendable, CaseIterable {
        case adaLNZero = "adaln-zero", crossAttention = "cross-attention", inContext = "in-context"
    }

    public var patchSize: Int
    public var temporalPatch: Int
    public var inChannels: Int
    public var outChannels: Int
    public var hiddenSize: Int
    public var depth: Int
    public var numHeads: Int
    public var mlpRatio: Double
    /// Width of the caption states (the text encoder's).
    public var captionChannels: Int
    public var conditioning: Conditioning

    public init(patchSize: Int = 2, temporalPatch: Int = 2, inChannels: Int = 4, outChannels: Int = 8,
                hiddenSize: Int, depth: Int, numHeads: Int, mlpRatio: Double = 4, captionChannels: Int,
                conditioning: Conditioning = .adaLNZero) {
        (self.patchSize, self.temporalPatch, self.inChannels, self.outChannels) = (patchSize, temporalPatch, inChannels,
                                                                                   outChannels)
        (self.hiddenSize, self.depth, self.numHeads, self.mlpRatio) = (hiddenSize, depth, numHeads, mlpRatio)
        (self.captionChannels, self.conditioning) = (captionChannels, conditioning)
    }

    /// The DiT block shape (its inputSize and classes unused).
    var blockConfig: DiTConfig {
        DiTConfig(inputSize: patchSize, patchSize: patchSize, inChannels: inChannels, hiddenSize: hiddenSize,
                  depth: depth, numHeads: numHeads, mlpRatio: mlpRatio, numClasses: 1, learnSigma: false)
    }

    /// Features per output token: pt·p·p·C_out.
    var patchFeatures: Int { temporalPatch * patchSize * patchSize * outChannels }

    public func validate() throws {
        func fail(_ reason: String) -> ModelError { .invalidConfig("video DiT: \(reason)") }
        guard patchSize > 0, temporalPatch > 0 else { throw fail("patch sizes must be positive") }
        guard numHeads > 0, hiddenSize % numHeads == 0, hiddenSize % 4 == 0 else {
            throw fail("hidden size \(hiddenSize) must be a multiple of 4 and of the \(numHeads) heads")
        }
        guard depth > 0, inChannels > 0, outChannels > 0, captionChannels > 0, mlpRatio > 0 else {
            throw fail("depth, channels, caption channels and MLP ratio must be positive")
        }
    }

    /// `vDiT-{S,B,L,XL}/{t}{h}{w}` (OpenDiT's VDiT-XL/2x2x2 is vDiT-XL/222): the DiT paper's sizes with a
    /// t × h × w patch (h = w).
    public static func named(_ name: String, inChannels: Int = 4, captionChannels: Int = 768,
                             conditioning: Conditioning = .adaLNZero) throws -> VideoDiTConfig {
        let parts = name.split(separator: "/")
        guard parts.count == 2, parts[0].hasPrefix("vDiT-"), let size = DiTConfig.paperSizes[String(parts[0].dropFirst(5))],
              parts[1].count == 3, let patch = Int(parts[1]), let t = parts[1].first?.wholeNumberValue,
              let h = parts[1].dropFirst().first?.wholeNumberValue, patch % 10 == h, t > 0, h > 0 else {
            throw ModelError.invalidConfig("'\(name)' is not a video DiT name: vDiT-{S,B,L,XL}/{t}{h}{w} with h = w, "
                                           + "e.g. vDiT-XL/222")
        }
        let config = VideoDiTConfig(patchSize: h, temporalPatch: t, inChannels: inChannels, outChannels: inChannels,
                                    hiddenSize: size.hidden, depth: size.depth, numHeads: size.heads,
                                    captionChannels: captionChannels, conditioning: conditioning)
        try config.validate()
        return config
    }
}
