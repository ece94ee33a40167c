import Foundation
import KinemaNN
import KinemaTensor

/// Weights in and out by name, in the original DiT layout (`DiT(...).state_dict()` names) or from a diffusers
/// `DiTTransformer2DModel` folder.
extension DiT {
    /// The model's tensors under their original DiT names, including the fixed `pos_embed` [1, N, D], so the file
    /// loads into the reference implementation with `load_state_dict(strict=True)`. The weights are the full-precision
    /// ones (a bf16 model's f32 master), so a mixed-precision model saves exactly what an f32 model would.
    public func stateDict() -> [(name: String, tensor: Tensor)] {
        parameters.map { ($0.name, $0.weights) }
            + [("pos_embed", positionalEmbedding.reshaped([1, config.tokenCount, config.hiddenSize]))]
    }

    /// Copies every parameter from `lookup(name)`, converting the dtype; a missing tensor or a wrong shape is an
    /// error naming the tensor. `pos_embed` is fixed and recomputed, so it is not read. The tensors go into the full
    /// weights (exactly into a bf16 model's f32 master), and the compute copy is then cast from the master once.
    public func loadParameters(from source: String, _ lookup: (String) throws -> Tensor?) throws {
        try arena.loadParameters(from: source, expected: "a DiT checkpoint of the same configuration "
                                 + "(\(config.hiddenSize) hidden, depth \(config.depth))", lookup)
    }
}

/// Finds the layout of a checkpoint and builds the model it describes.
public enum DiTCheckpoint {
    /// `path` is either a diffusers folder (config.json + diffusion_pytorch_model.safetensors) or a .safetensors file
    /// in the original layout — bare names, or a Kinema training checkpoint whose `model.`/`ema.` prefixes are
    /// resolved (EMA weights preferred when `preferEMA`). The config comes from the file's metadata when present,
    /// otherwise from the tensor shapes (`numHeads` is then required unless the hidden size is one of the paper's).
    /// `keepsMaster: false` loads a 16-bit model for inference only, without the f32 master weights.
    public static func load(path: String, backend: any Backend, dtype: DType = .f32, preferEMA: Bool = true,
                            numHeads: Int? = nil, keepsMaster: Bool = true) throws -> DiT {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelError.badCheckpoint(path: path, reason: "no such file or folder")
        }
        if isDirectory.boolValue {
            return try loadDiffusers(folder: path, backend: backend, dtype: dtype, keepsMaster: keepsMaster)
        }
        let file = try SafetensorsFile(url: URL(fileURLWithPath: path))
        let names = Set(file.names)
        let prefix = preferEMA && names.contains("ema.x_embedder.proj.weight") ? "ema."
            : names.contains("model.x_embedder.proj.weight") ? "model." : ""
        let config = try file.metadata["config"].map { try DiTConfig(json: $0) }
            ?? inferConfig(file: file, prefix: prefix, numHeads: numHeads)
        let model = try DiT(config: config, backend: backend, dtype: dtype, keepsMaster: keepsMaster)
        try model.loadParameters(from: path) { name in
            file.contains(prefix + name) ? try file.tensor(prefix + name, on: backend) : nil
        }
        return model
    }

    /// The original layout's config, read off the tensor shapes.
    static func inferConfig(file: SafetensorsFile, prefix: String, numHeads: Int?) throws -> DiTConfig {
        func shape(_ name: String) throws -> [Int] {
            guard file.contains(prefix + name) else {
                throw ModelError.badCheckpoint(path: file.url.path, reason: "tensor '\(prefix + name)' is missing; "
                    + "this does not look like a DiT checkpoint in the original layout")
            }
            return try file.info(prefix + name).shape
        }
        let patch = try shape("x_embedder.proj.weight")  // [D, C, p, p]
        let hidden = patch[0], channels = patch[1], p = patch[2]
        let tokens = try shape("pos_embed")[1]
        let side = Int(Double(tokens).squareRoot().rounded())
        let depth = Set(file.names.compactMap { name -> Int? in
            guard name.hasPrefix(prefix + "blocks.") else { return nil }
            return Int(name.dropFirst(prefix.count + 7).prefix { $0 != "." })
        }).count
        let table = try shape("y_embedder.embedding_table.weight")
        let outChannels = try shape("final_layer.linear.weight")[0] / (p * p)
        let mlpHidden = try shape("blocks.0.mlp.fc1.weight")[0]
        let heads = try DiTConfig.heads(given: numHeads, hidden: hidden, path: file.url.path)
        return DiTConfig(inputSize: side * p, patchSize: p, inChannels: channels, hiddenSize: hidden, depth: depth,
                         numHeads: heads, mlpRatio: Double(mlpHidden) / Double(hidden), numClasses: table[0] - 1,
                         learnSigma: outChannels == 2 * channels, classDropoutProb: 0.1)
    }

    /// A diffusers `DiTTransformer2DModel` folder.
    static func loadDiffusers(folder: String, backend: any Backend, dtype: DType, keepsMaster: Bool) throws -> DiT {
        let configURL = URL(fileURLWithPath: folder).appendingPathComponent("config.json")
        let weightsURL = URL(fileURLWithPath: folder).appendingPathComponent("diffusion_pytorch_model.safetensors")
        guard let data = FileManager.default.contents(atPath: configURL.path),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelError.badCheckpoint(path: configURL.path, reason: "missing or unreadable config.json")
        }
        let file = try SafetensorsFile(url: weightsURL)
        let config = try DiTConfig(diffusersConfig: json, path: configURL.path,
                                   mlpHidden: try file.info("transformer_blocks.0.ff.net.0.proj.weight").shape[0])
        let model = try DiT(config: config, backend: backend, dtype: dtype, keepsMaster: keepsMaster)
        let mapping = diffusersNames(depth: config.depth)
        try checkSharedEmbedders(file: file, depth: config.depth, backend: backend)
        try model.loadParameters(from: weightsURL.path) { name in
            guard let sources = mapping[name] else { return nil }
            for source in sources where !file.contains(source) {
                throw ModelError.badCheckpoint(path: weightsURL.path, reason: "tensor '\(source)' (for '\(name)') is missing")
            }
            let parts = try sources.map { try file.tensor($0, on: backend) }
            return parts.count == 1 ? parts[0] : backend.concat(parts, axis: 0)
        }
        return model
    }

    /// Original name → the diffusers tensors it is made of (q, k and v concatenate into qkv).
    static func diffusersNames(depth: Int) -> [String: [String]] {
        var map: [String: [String]] = [:]
        func both(_ original: String, _ diffusers: String) {
            map["\(original).weight"] = ["\(diffusers).weight"]
            map["\(original).bias"] = ["\(diffusers).bias"]
        }
        both("x_embedder.proj", "pos_embed.proj")
        // diffusers keeps a timestep and label embedder in every block; converted checkpoints hold one copy each.
        both("t_embedder.mlp.0", "transformer_blocks.0.norm1.emb.timestep_embedder.linear_1")
        both("t_embedder.mlp.2", "transformer_blocks.0.norm1.emb.timestep_embedder.linear_2")
        map["y_embedder.embedding_table.weight"] = ["transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight"]
        for i in 0..<depth {
            let block = "transformer_blocks.\(i)"
            both("blocks.\(i).adaLN_modulation.1", "\(block).norm1.linear")
            for kind in ["weight", "bias"] {
                map["blocks.\(i).attn.qkv.\(kind)"] = ["to_q", "to_k", "to_v"].map { "\(block).attn1.\($0).\(kind)" }
            }
            both("blocks.\(i).attn.proj", "\(block).attn1.to_out.0")
            both("blocks.\(i).mlp.fc1", "\(block).ff.net.0.proj")
            both("blocks.\(i).mlp.fc2", "\(block).ff.net.2")
        }
        both("final_layer.adaLN_modulation.1", "proj_out_1")
        both("final_layer.linear", "proj_out_2")
        return map
    }

    /// DiT shares one timestep/label embedder; a diffusers model whose blocks hold different ones cannot be
    /// expressed as a DiT, so say so rather than silently using block 0's.
    static func checkSharedEmbedders(file: SafetensorsFile, depth: Int, backend: any Backend) throws {
        let suffixes = ["timestep_embedder.linear_1.weight", "timestep_embedder.linear_2.weight",
                        "class_embedder.embedding_table.weight"]
        for suffix in suffixes {
            let first = try file.floats("transformer_blocks.0.norm1.emb.\(suffix)")
            for i in 1..<max(depth, 1) {
                let name = "transformer_blocks.\(i).norm1.emb.\(suffix)"
                guard file.contains(name) else { continue }
                if try file.floats(name) != first {
                    throw ModelError.badCheckpoint(path: file.url.path, reason: "'\(name)' differs from block 0's; "
                        + "Kinema's DiT shares one timestep/label embedder across blocks as the original DiT does")
                }
            }
        }
    }
}

extension DiTConfig {
    /// The JSON stored in a checkpoint's metadata under "config", with the original DiT constructor's names.
    public var json: String {
        let object: [String: Any] = [
            "input_size": inputSize, "patch_size": patchSize, "in_channels": inChannels, "hidden_size": hiddenSize,
            "depth": depth, "num_heads": numHeads, "mlp_ratio": mlpRatio, "num_classes": numClasses,
            "learn_sigma": learnSigma, "class_dropout_prob": classDropoutProb, "mlp_norm_eps": mlpNormEps,
            "timestep_frequency_shift": timestepFrequencyShift,
        ]
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    public init(json text: String) throws {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw ModelError.invalidConfig("checkpoint config metadata is not a JSON object: \(text.prefix(80))")
        }
        func int(_ key: String) throws -> Int {
            guard let value = object[key] as? NSNumber else {
                throw ModelError.invalidConfig("checkpoint config lacks integer '\(key)'")
            }
            return value.intValue
        }
        func double(_ key: String, _ fallback: Double) -> Double { (object[key] as? NSNumber)?.doubleValue ?? fallback }
        self.init(inputSize: try int("input_size"), patchSize: try int("patch_size"), inChannels: try int("in_channels"),
                  hiddenSize: try int("hidden_size"), depth: try int("depth"), numHeads: try int("num_heads"),
                  mlpRatio: double("mlp_ratio", 4), numClasses: try int("num_classes"),
                  learnSigma: (object["learn_sigma"] as? NSNumber)?.boolValue ?? true,
                  classDropoutProb: double("class_dropout_prob", 0.1), mlpNormEps: double("mlp_norm_eps", 1e-6),
                  timestepFrequencyShift: double("timestep_frequency_shift", 0))
        try validate()
    }

    /// A diffusers `DiTTransformer2DModel` config.json.
    init(diffusersConfig json: [String: Any], path: String, mlpHidden: Int) throws {
        func int(_ key: String) throws -> Int {
            guard let value = json[key] as? NSNumber else {
                throw ModelError.badCheckpoint(path: path, reason: "config.json lacks integer '\(key)'")
            }
            return value.intValue
        }
        if let norm = json["norm_type"] as? String, norm != "ada_norm_zero" {
            throw ModelError.badCheckpoint(path: path, reason: "norm_type '\(norm)' is not DiT's ada_norm_zero")
        }
        let heads = try int("num_attention_heads"), hidden = heads * (try int("attention_head_dim"))
        let inChannels = try int("in_channels")
        let outChannels = (json["out_channels"] as? NSNumber)?.intValue ?? inChannels
        self.init(inputSize: try int("sample_size"), patchSize: try int("patch_size"), inChannels: inChannels,
                  hiddenSize: hidden, depth: try int("num_layers"), numHeads: heads,
                  mlpRatio: Double(mlpHidden) / Double(hidden), numClasses: try int("num_embeds_ada_norm"),
                  learnSigma: outChannels == 2 * inChannels, classDropoutProb: 0.1,
                  mlpNormEps: (json["norm_eps"] as? NSNumber)?.doubleValue ?? 1e-5, timestepFrequencyShift: 1)
        try validate()
    }
}
