import Foundation
import KinemaTensor

/// timm's Attention as DiT uses it: one qkv Linear(dim, 3·dim) whose output splits as [B, N, 3, H, Dh],
/// scaled dot-product attention per head with scale 1/√Dh, heads merged back to [B, N, D], then proj.
public final class SelfAttention: Layer {
    public struct Cache {
        public let x: Tensor
        /// q, k, v [B, H, N, Dh] (views of one permuted qkv tensor).
        public let q, k, v: Tensor
        /// The attention output [B, H, N, Dh] and its per-row log-sum-exp [B, H, N].
        public let out, logSumExp: Tensor
        /// The heads merged back to [B, N, D]: proj's input.
        public let merged: Tensor
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

    /// x [B, N, D] → [B, N, D].
    public func forward(_ x: Tensor) -> (Tensor, Cache) {
        precondition(x.rank == 3 && x.shape[2] == dim, "\(qkv.weight.name): input must be [B, N, \(dim)], got \(x.shape)")
        let (batch, tokens) = (x.shape[0], x.shape[1])
        // [B, N, 3D] → [B, N, 3, H, Dh] → [3, B, H, N, Dh]; q, k, v are its three leading slices.
        let heads5 = backend.permute(qkv.forward(x).reshaped([batch, tokens, 3, heads, headDim]), [2, 0, 3, 1, 4])
        let (q, k, v) = (heads5[0], heads5[1], heads5[2])
        let (out, logSumExp) = backend.attention(q: q, k: k, v: v, keyMask: nil, scale: scale)
        // [B, H, N, Dh] → [B, N, H, Dh] → [B, N, D].
        let merged = backend.permute(out, [0, 2, 1, 3]).reshaped([batch, tokens, dim])
        let y = proj.forward(merged)
        return (y, Cache(x: x, q: q, k: k, v: v, out: out, logSumExp: logSumExp, merged: merged))
    }

    public func backward(_ dy: Tensor, _ cache: Cache) -> Tensor {
        let (batch, tokens) = (cache.x.shape[0], cache.x.shape[1])
        let dMerged = proj.backward(dy, input: cache.merged)
        let dOut = backend.permute(dMerged.reshaped([batch, tokens, heads, headDim]), [0, 2, 1, 3])
        let (dq, dk, dv) = backend.attentionBackward(dOut, q: cache.q, k: cache.k, v: cache.v, out: cache.out,
                                                     logSumExp: cache.logSumExp, keyMask: nil, scale: scale)
        // [3, B, H, N, Dh] → [B, N, 3, H, Dh] → [B, N, 3D]: the inverse of the forward's split.
        let headShape = [1, batch, heads, tokens, headDim]
        let stacked = backend.concat([dq.reshaped(headShape), dk.reshaped(headShape), dv.reshaped(headShape)], axis: 0)
        let dQKV = backend.permute(stacked, [1, 3, 0, 2, 4]).reshaped([batch, tokens, 3 * dim])
        return qkv.backward(dQKV, input: cache.x)
    }
}
