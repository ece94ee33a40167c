import Foundation
import KinemaNN
import KinemaTensor

/// The shape of a BERT encoder (transformers `BertConfig`): all-MiniLM-L6-v2 is hidden 384, 6 layers, 12 heads,
/// intermediate 1536, 512 positions.
public struct BertConfig: Equatable, Sendable {
    public var vocabSize, hiddenSize, layers, heads, intermediateSize, maxPositions, typeVocabSize: Int
    public var layerNormEps: Double

    public init(vocabSize: Int, hiddenSize: Int, layers: Int, heads: Int, intermediateSize: Int,
                maxPositions: Int = 512, typeVocabSize: Int = 2, layerNormEps: Double = 1e-12) {
        (self.vocabSize, self.hiddenSize, self.layers, self.heads) = (vocabSize, hiddenSize, layers, heads)
        (self.intermediateSize, self.maxPositions, self.typeVocabSize) = (intermediateSize, maxPositions, typeVocabSize)
        self.layerNormEps = layerNormEps
    }

    /// From transformers' config.json; only the absolute positions and the exact GELU are supported.
    init(_ config: ConfigJSON) throws {
        if let act = config.json["hidden_act"] as? String, act != "gelu" {
            throw config.fail("hidden_act '\(act)' is not supported (only 'gelu')")
        }
        if let positions = config.json["position_embedding_type"] as? String, positions != "absolute" {
            throw config.fail("position_embedding_type '\(positions)' is not supported (only 'absolute')")
        }
        self.init(vocabSize: try config.int("vocab_size"), hiddenSize: try config.int("hidden_size"),
                  layers: try config.int("num_hidden_layers"), heads: try config.int("num_attention_heads"),
                  intermediateSize: try config.int("intermediate_size"),
                  maxPositions: try config.int("max_position_embeddings"),
                  typeVocabSize: config.int("type_vocab_size", default: 2),
                  layerNormEps: config.double("layer_norm_eps", default: 1e-12))
        try validate(path: config.path)
    }

    func validate(path: String) throws {
        guard [vocabSize, hiddenSize, layers, heads, intermediateSize, maxPositions, typeVocabSize].allSatisfy({ $0 > 0 }),
              hiddenSize % heads == 0 else {
            throw ModelError.badCheckpoint(path: path, reason: "sizes must be positive and the hidden size "
                                           + "\(hiddenSize) divisible by \(heads) heads")
        }
    }
}

/// transformers' `BertModel` as a frozen text encoder (forward only; the caption states of a text-to-video model
/// come from its last hidden state). Post-norm layers:
///   h = LayerNorm(word[ids] + position[0..<L] + token_type[0])
///   per layer: h = LayerNorm(h + dense(attention(h, key mask)));  h = LayerNorm(h + dense(GELU(dense(h))))
///   pooler_output = tanh(pooler.dense(h[:, 0]))
public final class BertEncoder {
    public let config: BertConfig
    public let backend: any Backend
    public let dtype: DType
    let wordEmbeddings, positionEmbeddings, tokenTypeEmbeddings: Parameter
    let embeddingNorm: LayerNorm
    let layers: [Layer]
    let pooler: Linear
    public let arena: ParameterArena

    /// One post-norm encoder layer (`encoder.layer.N`).
    final class Layer: KinemaNN.Layer {
        let attention: MultiHeadAttention
        let attentionNorm: LayerNorm
        let intermediate: Linear
        let output: Linear
        let outputNorm: LayerNorm

        init(attention: MultiHeadAttention, attentionNorm: LayerNorm, intermediate: Linear, output: Linear,
             outputNorm: LayerNorm) {
            (self.attention, self.attentionNorm, self.intermediate) = (attention, attentionNorm, intermediate)
            (self.output, self.outputNorm) = (output, outputNorm)
        }

        var parameters: [Parameter] {
            attention.parameters + attentionNorm.parameters + intermediate.parameters + output.parameters
                + outputNorm.parameters
        }
        var packedRuns: [Range<Int>] { attention.packedRuns }
    }

    public init(config: BertConfig, backend: any Backend, dtype: DType = .f32, seed: UInt64 = 0) {
        self.config = config
        self.backend = backend
        self.dtype = dtype
        let d = config.hiddenSize, eps = config.layerNormEps, layerDType: DType = dtype == .f64 ? .f64 : .f32
        func table(_ name: String, rows: Int) -> Parameter {
            let values = Initializers.normal(count: rows * d, std: 0.02, seed: seed, stream: initializerStream(for: name))
            return Parameter(name: name, value: backend.upload(values, shape: [rows, d], dtype: layerDType),
                             backend: backend)
        }
        wordEmbeddings = table("embeddings.word_embeddings.weight", rows: config.vocabSize)
        positionEmbeddings = table("embeddings.position_embeddings.weight", rows: config.maxPositions)
        tokenTypeEmbeddings = table("embeddings.token_type_embeddings.weight", rows: config.typeVocabSize)
        embeddingNorm = LayerNorm(backend: backend, name: "embeddings.LayerNorm", dim: d, affine: true, eps: eps,
                                  dtype: layerDType)
        layers = (0..<config.layers).map { index in
            let prefix = "encoder.layer.\(index)"
            return Layer(attention: MultiHeadAttention(backend: backend, name: "\(prefix).attention", dim: d,
                                                       heads: config.heads, bias: true, names: .bert,
                                                       dtype: layerDType, seed: seed),
                         attentionNorm: LayerNorm(backend: backend, name: "\(prefix).attention.output.LayerNorm",
                                                  dim: d, affine: true, eps: eps, dtype: layerDType),
                         intermediate: Linear(backend: backend, name: "\(prefix).intermediate.dense", inFeatures: d,
                                              outFeatures: config.intermediateSize, dtype: layerDType, seed: seed),
                         output: Linear(backend: backend, name: "\(prefix).output.dense",
                                        inFeatures: config.intermediateSize, outFeatures: d, dtype: layerDType,
                                        seed: seed),
                         outputNorm: LayerNorm(backend: backend, name: "\(prefix).output.LayerNorm", dim: d,
                                               affine: true, eps: eps, dtype: layerDType))
        }
        pooler = Linear(backend: backend, name: "pooler.dense", inFeatures: d, outFeatures: d, dtype: layerDType,
                        seed: seed)
        let embedding = [wordEmbeddings, positionEmbeddings, tokenTypeEmbeddings] + embeddingNorm.parameters
        let offset = embedding.count
        arena = ParameterArena(parameters: embedding + layers.flatMap(\.parameters) + pooler.parameters,
                               computeDType: dtype, backend: backend, keepsMaster: false,
                               packedRuns: KinemaNN.packedRuns(of: layers).map { ($0.lowerBound + offset)..<($0.upperBound + offset) })
    }

    public var parameters: [Parameter] { arena.parameters }

    /// input_ids i32 [B, L] and attention_mask i32 [B, L] (1 = token, 0 = padding; nil = all tokens) →
    /// last_hidden_state [B, L, D] and pooler_output [B, D], in the model's compute dtype.
    public func forward(inputIDs: Tensor, attentionMask: Tensor?) -> (lastHiddenState: Tensor, pooled: Tensor) {
        TextInputs.check("BERT", inputIDs: inputIDs, attentionMask: attentionMask, maxPositions: config.maxPositions)
        let (batch, length, d) = (inputIDs.shape[0], inputIDs.shape[1], config.hiddenSize)
        let tokenType = backend.narrow(tokenTypeEmbeddings.value, axis: 0, start: 0, length: 1)
        let summed = backend.addBias(TextInputs.embed(inputIDs, table: wordEmbeddings.value,
                                                      positions: positionEmbeddings.value, backend: backend)
                                         .reshaped([batch * length, d]),
                                     tokenType.reshaped([d]))
        var hidden = embeddingNorm.forward(summed.reshaped([batch, length, d])).0
        for layer in layers {
            let (attended, _) = layer.attention.forward(hidden, keyMask: attentionMask)
            hidden = layer.attentionNorm.forward(backend.add(hidden, attended)).0
            let activated = backend.unary(.geluErf, layer.intermediate.forward(hidden))
            hidden = layer.outputNorm.forward(backend.add(hidden, layer.output.forward(activated))).0
        }
        let first = backend.narrow(hidden, axis: 1, start: 0, length: 1).reshaped([batch, d])
        return (hidden, backend.unary(.tanh, pooler.forward(first)))
    }
}

/// Loads a transformers BERT folder: config.json and model.safetensors (names with or without a "bert." prefix).
public enum BertCheckpoint {
    public static func load(folder: String, backend: any Backend, dtype: DType = .f32) throws -> BertEncoder {
        let (json, configPath, file, weightsPath) = try DiffusersFolder.open(folder, weights: "model.safetensors")
        let config = try BertConfig(ConfigJSON(json: json, path: configPath))
        let model = BertEncoder(config: config, backend: backend, dtype: dtype)
        try model.arena.loadParameters(from: weightsPath, expected: "a BertModel of this config.json") { name in
            if file.contains(name) { return try file.tensor(name, on: backend) }
            return file.contains("bert." + name) ? try file.tensor("bert." + name, on: backend) : nil
        }
        return model
    }
}
