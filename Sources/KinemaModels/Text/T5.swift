import Foundation
import KinemaNN
import KinemaTensor

/// The shape of a T5 encoder (transformers `T5Config`): T5-v1.1-XXL, the text encoder of PixArt and Open-Sora, is
/// d_model 4096, 24 layers, 64 heads of 64, d_ff 10240, gated-gelu.
public struct T5Config: Equatable, Sendable {
    /// The feed-forward: "relu" (original T5: wo(act(wi x))) or gated ("gated-gelu", T5 v1.1 and flan:
    /// wo(act(wi_0 x) ⊙ wi_1 x)), with transformers' activation for each name.
    public enum Activation: String, Sendable { case relu, geluNew = "gelu_new", gelu, silu }

    public var vocabSize, dModel, keyValueDim, feedForwardDim, layers, heads: Int
    public var relativeBuckets, relativeMaxDistance: Int
    public var activation: Activation
    public var gated: Bool
    public var layerNormEps: Double

    public init(vocabSize: Int, dModel: Int, keyValueDim: Int, feedForwardDim: Int, layers: Int, heads: Int,
                relativeBuckets: Int = 32, relativeMaxDistance: Int = 128, activation: Activation = .relu,
                gated: Bool = false, layerNormEps: Double = 1e-6) {
        (self.vocabSize, self.dModel, self.keyValueDim, self.feedForwardDim) = (vocabSize, dModel, keyValueDim, feedForwardDim)
        (self.layers, self.heads, self.relativeBuckets, self.relativeMaxDistance) = (layers, heads, relativeBuckets,
                                                                                      relativeMaxDistance)
        (self.activation, self.gated, self.layerNormEps) = (activation, gated, layerNormEps)
    }

    /// From transformers' config.json: `feed_forward_proj` is "ACT" or "gated-ACT" ("gated-gelu" means gelu_new,
    /// as transformers reads it).
    init(_ config: ConfigJSON) throws {
        let projection = config.string("feed_forward_proj", default: "relu")
        let parts = projection.split(separator: "-").map(String.init)
        let gated = parts.count == 2 && parts[0] == "gated"
        guard parts.count == 1 || gated else {
            throw config.fail("feed_forward_proj '\(projection)' is neither 'ACT' nor 'gated-ACT'")
        }
        let name = projection == "gated-gelu" ? "gelu_new" : parts.last!
        guard let activation = Activation(rawValue: name) else {
            throw config.fail("feed_forward_proj '\(projection)': activation '\(name)' is not supported "
                              + "(relu, gelu, gelu_new, silu)")
        }
        self.init(vocabSize: try config.int("vocab_size"), dModel: try config.int("d_model"),
                  keyValueDim: try config.int("d_kv"), feedForwardDim: try config.int("d_ff"),
                  layers: try config.int("num_layers"), heads: try config.int("num_heads"),
                  relativeBuckets: config.int("relative_attention_num_buckets", default: 32),
                  relativeMaxDistance: config.int("relative_attention_max_distance", default: 128),
                  activation: activation, gated: gated, layerNormEps: config.double("layer_norm_epsilon", default: 1e-6))
        guard [vocabSize, dModel, keyValueDim, feedForwardDim, layers, heads, relativeBuckets, relativeMaxDistance]
            .allSatisfy({ $0 > 0 }), relativeBuckets >= 4, relativeMaxDistance > relativeBuckets / 4 else {
            throw config.fail("sizes must be positive, with at least 4 buckets and a max distance above buckets / 4")
        }
    }

    /// The bucket of key j for query i (relative position j − i), as T5's bidirectional encoder buckets it: half the
    /// buckets for each sign; within a half, exact distances below a quarter of the buckets, then logarithmic steps
    /// up to `relativeMaxDistance`, the last bucket beyond. The logarithm runs in f32, as in transformers, so
    /// the truncation lands where PyTorch's does.
    public func relativeBucket(query i: Int, key j: Int) -> Int {
        let half = relativeBuckets / 2, exact = half / 2, distance = abs(j - i)
        let side = j > i ? half : 0
        guard distance >= exact else { return side + distance }
        let ratio = Float.log(Float(distance) / Float(exact))
            / Float(Foundation.log(Double(relativeMaxDistance) / Double(exact))) * Float(half - exact)
        return side + min(exact + Int(ratio), half - 1)
    }
}

/// transformers' `T5EncoderModel` as a frozen text encoder (forward only). Pre-norm layers with RMSNorm and no
/// biases; attention is unscaled, with a learned bias per head and relative-position bucket (block 0's table,
/// shared by every layer):
///   h = shared[ids];  per block: h += o(attention(rms(h)) + bias);  h += wo(ff(rms(h)));  out = rms(h)
public final class T5Encoder {
    public let config: T5Config
    public let backend: any Backend
    public let dtype: DType
    let shared: Parameter
    let relativeAttentionBias: Parameter
    let blocks: [Block]
    let finalNorm: RMSNorm
    public let arena: ParameterArena

    /// `encoder.block.N`: layer.0 is the attention with its norm, layer.1 the feed-forward (`DenseReluDense`).
    final class Block {
        let attentionNorm: RMSNorm, attention: TextSelfAttention
        let feedForwardNorm: RMSNorm, input: [Linear], output: Linear

        init(attentionNorm: RMSNorm, attention: TextSelfAttention, feedForwardNorm: RMSNorm, input: [Linear],
             output: Linear) {
            (self.attentionNorm, self.attention, self.feedForwardNorm) = (attentionNorm, attention, feedForwardNorm)
            (self.input, self.output) = (input, output)
        }

        var parameters: [Parameter] {
            attentionNorm.parameters + attention.parameters + feedForwardNorm.parameters
                + input.flatMap(\.parameters) + output.parameters
        }
    }

    public init(config: T5Config, backend: any Backend, dtype: DType = .f32, seed: UInt64 = 0) {
        self.config = config
        self.backend = backend
        self.dtype = dtype
        let d = config.dModel, layerDType: DType = dtype == .f64 ? .f64 : .f32
        func table(_ name: String, rows: Int, columns: Int) -> Parameter {
            let values = Initializers.normal(count: rows * columns, std: 1, seed: seed, stream: initializerStream(for: name))
            return Parameter(name: name, value: backend.upload(values, shape: [rows, columns], dtype: layerDType),
                             backend: backend)
        }
        shared = table("shared.weight", rows: config.vocabSize, columns: d)
        relativeAttentionBias = table("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                                      rows: config.relativeBuckets, columns: config.heads)
        func norm(_ name: String) -> RMSNorm {
            RMSNorm(backend: backend, name: name, dim: d, eps: config.layerNormEps, dtype: layerDType)
        }
        func linear(_ name: String, _ inFeatures: Int, _ outFeatures: Int) -> Linear {
            Linear(backend: backend, name: name, inFeatures: inFeatures, outFeatures: outFeatures, bias: false,
                   dtype: layerDType, seed: seed)
        }
        blocks = (0..<config.layers).map { index in
            let prefix = "encoder.block.\(index).layer"
            let ff = "\(prefix).1.DenseReluDense"
            return Block(attentionNorm: norm("\(prefix).0.layer_norm"),
                         attention: TextSelfAttention(backend: backend, prefix: "\(prefix).0.SelfAttention",
                                                      names: AttentionNames(q: "q", k: "k", v: "v", out: "o"), dim: d,
                                                      heads: config.heads, headDim: config.keyValueDim, bias: false,
                                                      dtype: layerDType, seed: seed),
                         feedForwardNorm: norm("\(prefix).1.layer_norm"),
                         input: config.gated ? [linear("\(ff).wi_0", d, config.feedForwardDim),
                                                linear("\(ff).wi_1", d, config.feedForwardDim)]
                                             : [linear("\(ff).wi", d, config.feedForwardDim)],
                         output: linear("\(ff).wo", config.feedForwardDim, d))
        }
        finalNorm = norm("encoder.final_layer_norm")
        arena = ParameterArena(parameters: [shared, relativeAttentionBias] + blocks.flatMap(\.parameters)
                                   + finalNorm.parameters,
                               computeDType: dtype, backend: backend, keepsMaster: false)
    }

    public var parameters: [Parameter] { arena.parameters }

    /// The position bias [H, L, L] of a length-L sequence: the bucket table's rows gathered by bucket, per head.
    func positionBias(length: Int) -> Tensor {
        let buckets = (0..<(length * length)).map { Int32(config.relativeBucket(query: $0 / length, key: $0 % length)) }
        let rows = backend.embedding(relativeAttentionBias.value, indices: backend.upload(buckets, shape: [buckets.count]))
        return backend.permute(rows, [1, 0]).reshaped([config.heads, length, length])
    }

    func activate(_ x: Tensor) -> Tensor {
        switch config.activation {
        case .relu: return backend.unary(.relu, x)
        case .gelu: return backend.unary(.geluErf, x)
        case .geluNew: return backend.gelu(x)
        case .silu: return backend.silu(x)
        }
    }

    /// input_ids i32 [B, L] and attention_mask i32 [B, L] (nil = all tokens) → last_hidden_state [B, L, D] in the
    /// model's compute dtype.
    public func forward(inputIDs: Tensor, attentionMask: Tensor?) -> Tensor {
        TextInputs.check("T5", inputIDs: inputIDs, attentionMask: attentionMask)
        var hidden = TextInputs.embed(inputIDs, table: shared.value, positions: nil, backend: backend)
        let bias = positionBias(length: inputIDs.shape[1])
        for block in blocks {
            let attended = block.attention.forward(block.attentionNorm.forward(hidden).0, bias: bias,
                                                   keyMask: attentionMask, causal: false, scale: 1)
            hidden = backend.add(hidden, attended)
            let normed = block.feedForwardNorm.forward(hidden).0
            var inner = activate(block.input[0].forward(normed))
            if block.input.count == 2 { inner = backend.mul(inner, block.input[1].forward(normed)) }
            hidden = backend.add(hidden, block.output.forward(inner))
        }
        return finalNorm.forward(hidden).0
    }
}

/// Loads a transformers T5 encoder folder: config.json and model.safetensors (a T5EncoderModel, or the encoder half
/// of a T5ForConditionalGeneration; the token table as `shared.weight` or `encoder.embed_tokens.weight`).
public enum T5Checkpoint {
    public static func load(folder: String, backend: any Backend, dtype: DType = .f32) throws -> T5Encoder {
        let (json, configPath, file, weightsPath) = try DiffusersFolder.open(folder, weights: "model.safetensors")
        let model = T5Encoder(config: try T5Config(ConfigJSON(json: json, path: configPath)), backend: backend,
                              dtype: dtype)
        try model.arena.loadParameters(from: weightsPath, expected: "a T5 encoder of this config.json") { name in
            for candidate in [name] + (name == "shared.weight" ? ["encoder.embed_tokens.weight"] : [])
            where file.contains(candidate) {
                return try file.tensor(candidate, on: backend)
            }
            return nil
        }
        return model
    }
}
