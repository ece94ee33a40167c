import KinemaNN
import KinemaTensor

/// A text-conditioned video transformer that Kinema trains and samples (Latte, STDiT, the video DiT):
/// x [B, C, T, H, W], timesteps [B] and caption states with their mask in, the prediction [B, C_out, T, H, W] out.
public protocol TextConditionedVideoModel: AnyObject {
    associatedtype Cache
    associatedtype Config: Codable & Equatable
    var config: Config { get }
    var inChannels: Int { get }
    /// C (a velocity or ε) or 2C (ε and IDDPM's learned variance).
    var outChannels: Int { get }
    var captionChannels: Int { get }
    /// Patch sides: frames per patch (1 for per-frame patches) and pixels (or latents) per patch side.
    var temporalPatch: Int { get }
    var patchSize: Int { get }
    var backend: any Backend { get }
    var dtype: DType { get }
    var arena: ParameterArena { get }
    func forward(_ x: Tensor, timesteps: Tensor, captions: Tensor, captionMask: Tensor?) -> (Tensor, Cache)
    func backward(_ dOut: Tensor, _ cache: Cache)
}

extension TextConditionedVideoModel {
    /// The dtype of inputs and outputs (f32, or f64 for an f64 model).
    public var ioDType: DType { dtype == .f64 ? .f64 : .f32 }

    public var parameterCount: Int { arena.parameters.map(\.value.count).reduce(0, +) }

    /// The prediction alone (sampling).
    public func predict(_ x: Tensor, timesteps: Tensor, captions: Tensor, captionMask: Tensor?) -> Tensor {
        forward(x, timesteps: timesteps, captions: captions, captionMask: captionMask).0
    }

    /// Forward, `loss` on the output (its value and gradient), backward into the parameters' gradients; returns the
    /// loss and the output.
    public func trainingStep(_ x: Tensor, timesteps: Tensor, captions: Tensor, captionMask: Tensor?,
                             loss: (Tensor) -> (Double, Tensor)) -> (loss: Double, out: Tensor) {
        let (out, cache) = forward(x, timesteps: timesteps, captions: captions, captionMask: captionMask)
        let (value, gradient) = loss(out)
        backward(gradient, cache)
        return (value, out)
    }
}

/// The PixArt-config models patch each frame alone.
extension TextConditionedVideoModel where Config == PixArtConfig {
    public var inChannels: Int { config.inChannels }
    public var outChannels: Int { config.outChannels }
    public var captionChannels: Int { config.captionChannels }
    public var temporalPatch: Int { 1 }
    public var patchSize: Int { config.patchSize }
}

extension Latte: TextConditionedVideoModel {}
extension STDiT: TextConditionedVideoModel {}

extension VideoDiT: TextConditionedVideoModel {
    public var inChannels: Int { config.inChannels }
    public var outChannels: Int { config.outChannels }
    public var captionChannels: Int { config.captionChannels }
    public var temporalPatch: Int { config.temporalPatch }
    public var patchSize: Int { config.patchSize }
}
