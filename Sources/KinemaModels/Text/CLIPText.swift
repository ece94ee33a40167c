import Foundation
import KinemaNN
import KinemaTensor

/// The shape of CLIP's text transformer (transformers `CLIPTextConfig`): ViT-L/14's, Stable Diffusion 1.x's text
/// encoder, is hidden 768, 12 layers, 12 heads, intermediate 3072, 77 positions, quick_gelu.
public struct CLIPTextConfig: Equatable, Sendable {
    public var vocabSize, hiddenSize, intermediateSize, layers, heads, maxPositions: Int
    /// "quick_gelu" (OpenAI's CLIP) or "gelu" (exact; OpenCLIP's).
    public var quickGELU: Bool
    public var layerNormEps: Double
    /// The token whose position the pooled output is taken at; 2 (configs older than transformers PR #24773) means
    /// "the largest id", which is the end-of-text token of CLIP's vocabulary.
    public var eosTokenID: Int

    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, layers: Int, heads: Int, maxPositions: Int = 77,
                quickGELU: Bool = true, layerNormEps: Double = 1e-5, eosTokenID: Int = 49407) {
        (self.vocabSize, self.hiddenSize, self.intermediateSize, self.layers) = (vocabSize, hiddenSize, intermediateSize, layers)
        (self.heads, self.maxPositions, self.quickGELU) = (heads, maxPositions, quickGELU)
        (self.layerNormEps, self.eosTokenID) = (layerNormEps, eosTokenID)
    }

    /// From a CLIPTextModel's config.json, or a whole CLIPModel's (its `text_config`).
    init(_ config: ConfigJSON) throws {
        let text = (config.json["text_config"] as? [String: Any]).map { ConfigJSON(json: $0, path: config.path) } ?? config
        let activation = text.string("hidden_act", default: "quick_gelu")
        guard activation == "quick_gelu" || activation == "gelu" else {
            throw config.fail("hidden_act '\(activation)' is not supported (quick_gelu or gelu)")
        }
        self.init(vocabSize: try text.int("vocab_size"), hiddenSize: try text.int("hidden_size"),
                  intermediateSize: try text.int("intermediate_size"), layers: try text.int("num_hidden_layers"),
                  heads: try text.int("num_attention_heads"), maxPositions: text.int("max_position_embeddings", default: 77),
                  quickGELU: activation == "quick_gelu", layerNormEps: text.double("layer_norm_eps", default: 1e-5),
                  eosTokenID: text.int("eos_token_id", default: 49407))
        guard [vocabSize, hiddenSize, intermediateSize, layers, heads, maxPositions].allSatisfy({ $0 > 0 }),
              hiddenSize % heads == 0 else {
            throw config.fail("sizes must be positive and the hidden size \(hiddenSize) divisible by \(heads) heads")
        }
    }
}

/// transformers' `CLIPTextModel` as a frozen text encoder (forward only). Pre-norm layers with a causal mask:
///   h = token[ids] + position[0..<L];  per layer: h += out(attention(LN1(h)));  h += fc2(act(fc1(LN2(h))))
///   last_hidden_state = LN_final(h);  pooler_output = last_hidden_state at each row's end-of-text token
public final class CLIPTextEncoder {
    public let config: CLIPTextConfig
    public let backend: any Backend
    public let dtype: DType
    let tokenEmbedding, positionEmbedding: Parameter
    let layers: [Layer]
    let finalNorm: LayerNorm
    public let arena: ParameterArena

    /// `encoder.layers.N`.
    final class Layer {
        let norm1: LayerNorm, attention: TextSelfAttention, norm2: LayerNorm, fc1: Linear, fc2: Linear

        init(norm1: LayerNorm, attention: TextSelfAttention, norm2: LayerNorm, fc1: Linear, fc2: Linear) {
            (self.norm1, self.attention, self.norm2, self.fc1, self.fc2) = (norm1, attention, norm2, fc1, fc2)
        }

        var parameters: [Parameter] {
            norm1.parameters + attention.parameters + norm2.parameters + fc1.parameters + fc2.parameters
        }
    }

    public init(config: CLIPTextConfig, backend: any Backend, dtype: DType = .f32, seed: UInt64 = 0) {
        self.config = config
        self.backend = backend
        self.dtype = dtype
        let d = config.hiddenSize, layerDType: DType = dtype == .f64 ? .f64 : .f32
        func table(_ name: String, rows: Int) -> Parameter {
            let values = Initializers.normal(count: rows * d, std: 0.02, seed: seed, stream: initializerStream(for: name))
            return Parameter(name: name, value: backend.upload(values, shape: [rows, d], dtype: layerDType), backend: backend)
        }
        tokenEmbedding = table("embeddings.token_embedding.weight", rows: config.vocabSize)
        positionEmbedding = table("embeddings.position_embedding.weight", rows: config.maxPositions)
        func norm(_ name: String) -> LayerNorm {
            LayerNorm(backend: backend, name: name, dim: d, affine: true, eps: config.layerNormEps, dtype: layerDType)
        }
        layers = (0..<config.layers).map { index in
            let prefix = "encoder.layers.\(index)"
            return Layer(norm1: norm("\(prefix).layer_norm1"),
                         attention: TextSelfAttention(backend: backend, prefix: "\(prefix).self_attn",
                                                      names: AttentionNames(q: "q_proj", k: "k_proj", v: "v_proj",
                                                                            out: "out_proj"),
                                                      dim: d, heads: config.heads, headDim: d / config.heads, bias: true,
                                                      dtype: layerDType, seed: seed),
                         norm2: norm("\(prefix).layer_norm2"),
                         fc1: Linear(backend: backend, name: "\(prefix).mlp.fc1", inFeatures: d,
                                     outFeatures: config.intermediateSize, dtype: layerDType, seed: seed),
                         fc2: Linear(backend: backend, name: "\(prefix).mlp.fc2", inFeatures: config.intermediateSize,
                                     outFeatures: d, dtype: layerDType, seed: seed))
        }
        finalNorm = norm("final_layer_norm")
        arena = ParameterArena(parameters: [tokenEmbedding, positionEmbedding] + layers.flatMap(\.parameters)
                                   + finalNorm.parameters,
                               computeDType: dtype, backend: backend, keepsMaster: false)
    }

    public var parameters: [Parameter] { arena.parameters }

    /// input_ids i32 [B, L] (L ≤ max positions) and attention_mask i32 [B, L] (nil = all tokens) →
    /// last_hidden_state [B, L, D] and pooler_output [B, D], in the model's compute dtype. `ids` are the same ids on
    /// the host, to find each row's end-of-text position.
    public func forward(inputIDs: Tensor, ids: [Int32], attentionMask: Tensor?) -> (lastHiddenState: Tensor, pooled: Tensor) {
        TextInputs.check("CLIP", inputIDs: inputIDs, attentionMask: attentionMask, maxPositions: config.maxPositions)
        precondition(ids.count == inputIDs.count, "CLIP: \(ids.count) host ids for input_ids \(inputIDs.shape)")
        let (batch, length, d) = (inputIDs.shape[0], inputIDs.shape[1], config.hiddenSize)
        var hidden = TextInputs.embed(inputIDs, table: tokenEmbedding.value, positions: positionEmbedding.value,
                                      backend: backend)
        let scale = 1 / Double(d / config.heads).squareRoot()
        for layer in layers {
            hidden = backend.add(hidden, layer.attention.forward(layer.norm1.forward(hidden).0, bias: nil,
                                                                 keyMask: attentionMask, causal: true, scale: scale))
            let inner = layer.fc1.forward(layer.norm2.forward(hidden).0)
            hidden = backend.add(hidden, layer.fc2.forward(backend.unary(config.quickGELU ? .quickGelu : .geluErf, inner)))
        }
        let last = finalNorm.forward(hidden).0
        let rows = (0..<batch).map { b in Int32(b * length + endOfText(Array(ids[(b * length)..<((b + 1) * length)]))) }
        let pooled = backend.embedding(last.reshaped([batch * length, d]), indices: backend.upload(rows, shape: [batch]))
        return (last, pooled)
    }

    /// The pooled position of one row: its first end-of-text token, or (legacy eos id 2) its largest id's first
    /// position; 0 when the row has no end-of-text token (as argmax of all-false gives in PyTorch).
    func endOfText(_ row: [Int32]) -> Int {
        if config.eosTokenID == 2 { return row.indices.max { row[$0] < row[$1] } ?? 0 }  // ties: the first, as argmax
        return row.firstIndex(of: Int32(config.eosTokenID)) ?? 0
    }
}

/// Loads a transformers CLIP text encoder folder: config.json and model.safetensors, the names with the
/// `text_model.` prefix published checkpoints use (CLIPTextModel, or a whole CLIPModel) or without it.
public enum CLIPTextCheckpoint {
    public static func load(folder: String, backend: any Backend, dtype: DType = .f32) throws -> CLIPTextEncoder {
        let (json, configPath, file, weightsPath) = try DiffusersFolder.open(folder, weights: "model.safetensors")
        let model = CLIPTextEncoder(config: try CLIPTextConfig(ConfigJSON(json: json, path: configPath)),
                                    backend: backend, dtype: dtype)
        try model.arena.loadParameters(from: weightsPath, expected: "a CLIP text model of this config.json") { name in
            for candidate in ["text_model." + name, name] where file.contains(candidate) {
                return try file.tensor(candidate, on: backend)
            }
            return nil
        }
        return model
    }
}
