import KinemaNN
import KinemaTensor

/// The self-attention of a frozen text encoder, forward only: q, k, v and output projections under one prefix
/// (names and biases by model), `heads` heads of `headDim` (T5's inner width heads·d_kv need not be d_model), the
/// scores biased (T5's relative positions) and/or causal (CLIP).
final class TextSelfAttention {
    let q, k, v, out: Linear
    let heads, headDim: Int
    let backend: any Backend

    init(backend: any Backend, prefix: String, names: AttentionNames, dim: Int, heads: Int, headDim: Int, bias: Bool,
         dtype: DType, seed: UInt64) {
        func linear(_ name: String, _ inFeatures: Int, _ outFeatures: Int) -> Linear {
            Linear(backend: backend, name: "\(prefix).\(name)", inFeatures: inFeatures, outFeatures: outFeatures,
                   bias: bias, dtype: dtype, seed: seed)
        }
        let inner = heads * headDim
        (q, k, v, out) = (linear(names.q, dim, inner), linear(names.k, dim, inner), linear(names.v, dim, inner),
                          linear(names.out, inner, dim))
        (self.heads, self.headDim, self.backend) = (heads, headDim, backend)
    }

    var parameters: [Parameter] { [q, k, v, out].flatMap(\.parameters) }

    /// x [B, L, D] → [B, L, D]; `bias` [H, L, L] (or nil), `keyMask` i32 [B, L] (or nil).
    func forward(_ x: Tensor, bias: Tensor?, keyMask: Tensor?, causal: Bool, scale: Double) -> Tensor {
        let (batch, length) = (x.shape[0], x.shape[1])
        func split(_ y: Tensor) -> Tensor { backend.permute(y.reshaped([batch, length, heads, headDim]), [0, 2, 1, 3]) }
        let attended = backend.biasedAttention(q: split(q.forward(x)), k: split(k.forward(x)), v: split(v.forward(x)),
                                               bias: bias, keyMask: keyMask, causal: causal, scale: scale)
        return out.forward(backend.permute(attended, [0, 2, 1, 3]).reshaped([batch, length, heads * headDim]))
    }
}

/// What the text encoders share at their input.
enum TextInputs {
    /// Stops with a message unless input_ids are i32 [B, L] (L ≤ `maxPositions` when the model has a limit) and the
    /// attention mask, if any, i32 of the same shape.
    static func check(_ model: String, inputIDs: Tensor, attentionMask: Tensor?, maxPositions: Int? = nil) {
        precondition(inputIDs.rank == 2 && inputIDs.dtype == .i32, "\(model) expects i32 input_ids [B, L], got "
                     + "\(inputIDs.dtype) \(inputIDs.shape)")
        precondition(maxPositions.map { inputIDs.shape[1] <= $0 } ?? true,
                     "\(model): \(inputIDs.shape[1]) tokens exceed \(maxPositions ?? 0) positions")
        precondition(attentionMask.map { $0.shape == inputIDs.shape && $0.dtype == .i32 } ?? true,
                     "\(model): attention_mask must be i32 \(inputIDs.shape)")
    }

    /// table[ids] [B, L, D], plus the first L rows of a learned position table when given.
    static func embed(_ inputIDs: Tensor, table: Tensor, positions: Tensor?, backend: any Backend) -> Tensor {
        let (batch, length, d) = (inputIDs.shape[0], inputIDs.shape[1], table.shape[1])
        let tokens = backend.embedding(table, indices: inputIDs.reshaped([batch * length]))
        guard let positions else { return tokens.reshaped([batch, length, d]) }
        return backend.addBias(tokens.reshaped([batch, length * d]),
                               backend.narrow(positions, axis: 0, start: 0, length: length).reshaped([length * d]))
            .reshaped([batch, length, d])
    }
}
