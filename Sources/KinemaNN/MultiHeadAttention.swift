import Foundation
import KinemaTensor

/// The names of an attention layer's four projections under its prefix: diffusers' `Attention` (to_q … to_out.0),
/// or transformers' BERT (`attention.self.query` … `attention.output.dense`, with the prefix ending in `attention`).
public struct AttentionNames: Sendable {
    public var q, k, v, out: String

    public init(q: String, k: String, v: String, out: String) {
        (self.q, self.k, self.v, self.out) = (q, k, v, out)
    }

    public static let diffusers = AttentionNames(q: "to_q", k: "to_k", v: "to_v", out: "to_out.0")
    public static let bert = AttentionNames(q: "self.query", k: "self.key", v: "self.value", out: "output.dense")
}

/// diffusers' `Attention` (the attn1 / attn2 of its transformer blocks; other layouts by `AttentionNames`): to_q,
/// to_k, to_v and to_out.0, heads of width dim / heads, scale 1/√Dh. Self-attention reads q, k and v from x; cross-attention reads q from x and k, v
/// from a context (text states) of its own width, with an optional key mask over the context's padding.
///
/// The products that read one input run as one (`LinearStack`): q, k and v of self-attention give the packed
/// [B, N, 3, H, Dh] that `packedSelfAttention` takes; k and v of cross-attention the [B, L, 2, H, Dh] of
/// `packedCrossAttention`. So their parameters must lie back to back in the model's arena: `packedRuns` says which.
public final class MultiHeadAttention: Layer {
    public struct Cache {
        /// The input, the context (cross-attention), the packed projections (for cross-attention: k and v of each
        /// query sample, the context's repeated) and the merged heads (to_out's input).
        let x: Tensor, context: Tensor?, q: Tensor?, packed: Tensor, merged: Tensor, keyMask: Tensor?
        let logSumExp: Tensor
        let contextRepeats: Int
    }

    public let toQ, toK, toV, toOut: Linear
    public let heads: Int
    public let dim: Int
    /// The context's width for cross-attention; nil for self-attention.
    public let contextDim: Int?
    public var headDim: Int { dim / heads }
    public var scale: Double { 1 / Double(headDim).squareRoot() }
    let backend: any Backend
    /// q, k, v (self) or k, v (cross) as one product, made on first use, when the arena has placed them.
    private lazy var stacked = LinearStack(contextDim == nil ? [toQ, toK, toV] : [toK, toV], backend: backend)

    /// `bias`: the q, k and v projections' (diffusers' `attention_bias`); to_out always has one.
    public init(backend: any Backend, name: String, dim: Int, heads: Int, contextDim: Int? = nil, bias: Bool,
                names: AttentionNames = .diffusers, dtype: DType, seed: UInt64 = 0) {
        precondition(heads > 0 && dim % heads == 0, "\(name): dim \(dim) is not divisible by \(heads) heads")
        self.backend = backend
        self.dim = dim
        self.heads = heads
        self.contextDim = contextDim
        let kvIn = contextDim ?? dim
        toQ = Linear(backend: backend, name: "\(name).\(names.q)", inFeatures: dim, outFeatures: dim, bias: bias,
                     dtype: dtype, seed: seed)
        toK = Linear(backend: backend, name: "\(name).\(names.k)", inFeatures: kvIn, outFeatures: dim, bias: bias,
                     dtype: dtype, seed: seed)
        toV = Linear(backend: backend, name: "\(name).\(names.v)", inFeatures: kvIn, outFeatures: dim, bias: bias,
                     dtype: dtype, seed: seed)
        toOut = Linear(backend: backend, name: "\(name).\(names.out)", inFeatures: dim, outFeatures: dim, dtype: dtype,
                       seed: seed)
    }

    /// The stacked layers' weights, then their biases (the order `LinearStack` reads), then the rest.
    public var parameters: [Parameter] {
        let stackedLayers = contextDim == nil ? [toQ, toK, toV] : [toK, toV]
        let alone = contextDim == nil ? [] : toQ.parameters
        return alone + stackedLayers.map(\.weight) + stackedLayers.compactMap(\.bias) + toOut.parameters
    }

    public var packedRuns: [Range<Int>] {
        let start = contextDim == nil ? 0 : toQ.parameters.count, count = contextDim == nil ? 3 : 2
        return toK.bias == nil ? [start..<start + count] : [start..<start + count, start + count..<start + 2 * count]
    }

    /// x [B, N, D] (and, for cross-attention, context [B, L, C] with keyMask i32 [B, L] or nil) → [B, N, D].
    /// `contextRepeats` k: x holds k samples per context sample ([B·k, N, D], a video's frames against its one
    /// caption): k and v are computed once per context sample and repeated, their gradients summed back.
    public func forward(_ x: Tensor, context: Tensor? = nil, keyMask: Tensor? = nil,
                        contextRepeats: Int = 1) -> (Tensor, Cache) {
        precondition(x.rank == 3 && x.shape[2] == dim, "\(toQ.weight.name): input must be [B, N, \(dim)], got \(x.shape)")
        precondition((context == nil) == (contextDim == nil),
                     "\(toQ.weight.name): a context is \(contextDim == nil ? "not taken (self-attention)" : "required")")
        if let context {
            precondition(context.rank == 3 && context.shape[0] * contextRepeats == x.shape[0]
                         && context.shape[2] == contextDim,
                         "\(toK.weight.name): context must be [\(x.shape[0] / contextRepeats), L, \(contextDim!)] "
                         + "for \(contextRepeats) query samples each, got \(context.shape)")
            let q = toQ.forward(x)
            let kv = Repeats.interleave(stacked.forward(context), times: contextRepeats, backend: backend)
            let mask = keyMask.map { Repeats.interleave($0, times: contextRepeats, backend: backend) }
            let (merged, logSumExp) = backend.packedCrossAttention(q, kv: kv, heads: heads, keyMask: mask, scale: scale)
            return (toOut.forward(merged), Cache(x: x, context: context, q: q, packed: kv, merged: merged,
                                                 keyMask: mask, logSumExp: logSumExp, contextRepeats: contextRepeats))
        }
        let qkv = stacked.forward(x)
        let (merged, logSumExp) = backend.packedSelfAttention(qkv, heads: heads, keyMask: keyMask, scale: scale)
        return (toOut.forward(merged), Cache(x: x, context: nil, q: nil, packed: qkv, merged: merged, keyMask: keyMask,
                                             logSumExp: logSumExp, contextRepeats: 1))
    }

    /// Accumulates the parameter gradients; returns dx and (cross-attention) the context's gradient.
    /// `outputBiasGradientAccumulated`: toOut's bias gradient is already added (see Linear.backward).
    public func backward(_ dy: Tensor, _ cache: Cache,
                         outputBiasGradientAccumulated: Bool = false) -> (dx: Tensor, dContext: Tensor?) {
        let dMerged = toOut.backward(dy, input: cache.merged, biasGradientAccumulated: outputBiasGradientAccumulated)
        guard let context = cache.context, let q = cache.q else {
            let dQKV = backend.packedSelfAttentionBackward(dMerged, qkv: cache.packed, out: cache.merged,
                                                           logSumExp: cache.logSumExp, heads: heads,
                                                           keyMask: cache.keyMask, scale: scale)
            return (stacked.backward(dQKV, input: cache.x), nil)
        }
        let (dq, dkv) = backend.packedCrossAttentionBackward(dMerged, q: q, kv: cache.packed, out: cache.merged,
                                                             logSumExp: cache.logSumExp, heads: heads,
                                                             keyMask: cache.keyMask, scale: scale)
        let dContextKV = Repeats.sumInterleaved(dkv, times: cache.contextRepeats, backend: backend)
        return (toQ.backward(dq, input: cache.x), stacked.backward(dContextKV, input: context))
    }
}
