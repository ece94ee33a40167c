import Foundation
import KinemaTensor

/// timm's Attention as DiT uses it: one qkv Linear(dim, 3·dim) whose output splits as [B, N, 3, H, Dh],
/// scaled dot-product attention per head with scale 1/√Dh, heads merged back to [B, N, D], then proj.
public final class SelfAttention: Layer {
    public struct Cache {
        /// The input, the packed qkv [B, N, 3D] and the heads merged back [B, N, D] (proj's input).
        public let x, packed, merged: Tensor
        /// The per-row log-sum-exp [B, H, N] of the attention, and the key mask it ran with.
        public let logSumExp: Tensor
        public let keyMask: Tensor?
    }

    public let qkv: Linear
    public let proj: Linear
    public let heads: Int
    public let dim: Int
    public var headDim: Int { dim / heads }
    public var scale: Double { 1 / sqrt(Double(headDim)) }
    let backend: any Backend

    public var parameters: [Parameter] { qkv.parameters + proj.parameters }

    public init(backend: any Backend, name: String, dim: Int, heads: Int, dtype: DType, seed: UInt64 = 0) {
        precondition(heads > 0 && dim % heads == 0, "\(name): dim \(dim) is not divisible by \(heads) heads")
        self.backend = backend
        self.dim = dim
        self.heads = heads
        qkv = Linear(backend: backend, name: "\(name).qkv", inFeatures: dim, outFeatures: 3 * dim, dtype: dtype,
                     seed: seed)
        proj = Linear(backend: backend, name: "\(name).proj", inFeatures: dim, outFeatures: dim, dtype: dtype,
                      seed: seed)
    }

    /// x [B, N, D] → [B, N, D]; `keyMask` (i32 [B, N], nil = every token) leaves padded tokens out as keys
    /// (in-context caption tokens).
    public func forward(_ x: Tensor, keyMask: Tensor? = nil) -> (Tensor, Cache) {
        precondition(x.rank == 3 && x.shape[2] == dim, "\(qkv.weight.name): input must be [B, N, \(dim)], got \(x.shape)")
        let packed = qkv.forward(x)
        let (merged, logSumExp) = backend.packedSelfAttention(packed, heads: heads, keyMask: keyMask, scale: scale)
        return (proj.forward(merged), Cache(x: x, packed: packed, merged: merged, logSumExp: logSumExp, keyMask: keyMask))
    }

    /// `outputBiasGradientAccumulated`: proj's bias gradient is already added (see Linear.backward).
    public func backward(_ dy: Tensor, _ cache: Cache, outputBiasGradientAccumulated: Bool = false) -> Tensor {
        let dMerged = proj.backward(dy, input: cache.merged, biasGradientAccumulated: outputBiasGradientAccumulated)
        let dQKV = backend.packedSelfAttentionBackward(dMerged, qkv: cache.packed, out: cache.merged,
                                                       logSumExp: cache.logSumExp, heads: heads, keyMask: cache.keyMask,
                                                       scale: scale)
        return qkv.backward(dQKV, input: cache.x)
    }
}
