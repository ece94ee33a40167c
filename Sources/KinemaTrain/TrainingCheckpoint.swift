import Foundation
import KinemaModels
import KinemaNN
import KinemaTensor

/// Everything a run needs to continue exactly where it stopped, besides the weights themselves.
public struct TrainingState: Codable, Equatable, Sendable {
    public var step: Int
    /// The host random stream (timesteps, label dropout, noise offsets).
    public var randomSeed: UInt64
    public var randomPosition: UInt64
    /// Where the data sampler stands (epoch and position within it).
    public var samplerEpoch: Int
    public var samplerPosition: Int
    public var options: TrainingOptions

    public init(step: Int, randomSeed: UInt64, randomPosition: UInt64, samplerEpoch: Int, samplerPosition: Int,
                options: TrainingOptions) {
        self.step = step
        self.randomSeed = randomSeed
        self.randomPosition = randomPosition
        self.samplerEpoch = samplerEpoch
        self.samplerPosition = samplerPosition
        self.options = options
    }
}

/// What a training checkpoint needs of a model: its full-precision weights by name, the header entries that
/// describe it (its config, so loaders rebuild it), a check that a saved header describes this model, and loading
/// weights back by name.
public protocol CheckpointableModel: AnyObject {
    var backend: any Backend { get }
    func stateDict() -> [(name: String, tensor: Tensor)]
    var checkpointMetadata: [String: String] { get }
    /// Throws when `metadata` (a saved header) describes another model than this one.
    func checkSavedMetadata(_ metadata: [String: String], path: String) throws
    func loadParameters(from source: String, _ lookup: (String) throws -> Tensor?) throws
}

extension DiT: CheckpointableModel {
    public var checkpointMetadata: [String: String] { ["config": config.json] }

    public func checkSavedMetadata(_ metadata: [String: String], path: String) throws {
        if let saved = metadata["config"], try DiTConfig(json: saved) != config {
            throw TrainingError.checkpoint(path: path, reason: "its model config (\(saved)) differs from this run's")
        }
    }
}

/// A text-to-video model in a `kinema train` checkpoint: `kinema_model` names its kind, `config` holds its config
/// as JSON, and the kind adds what else rebuilds it.
public protocol CheckpointableVideoModel: TextConditionedVideoModel, CheckpointableModel {
    static var modelKind: String { get }
    /// Header entries besides the kind and the config (Latte: video_length; STDiT: time_scale).
    var extraMetadata: [String: String] { get }
    /// The model a saved header describes (its config decoded, its own entries read).
    static func rebuild(config: Config, metadata: [String: String], backend: any Backend, dtype: DType,
                        keepsMaster: Bool) throws -> Self
}

extension CheckpointableVideoModel {
    public var checkpointMetadata: [String: String] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return ["kinema_model": Self.modelKind, "config": String(decoding: try! encoder.encode(config), as: UTF8.self)]
            .merging(extraMetadata) { $1 }
    }

    /// The model's config from a saved header (nil when it holds none of this kind).
    static func savedConfig(_ metadata: [String: String]) -> Config? {
        guard metadata["kinema_model"] == modelKind, let saved = metadata["config"] else { return nil }
        return try? JSONDecoder().decode(Config.self, from: Data(saved.utf8))
    }

    /// The model a saved header describes, built (weights not loaded); nil when the header is of another kind.
    static func rebuild(_ metadata: [String: String], backend: any Backend, dtype: DType) throws -> Self? {
        try savedConfig(metadata).map { try rebuild(config: $0, metadata: metadata, backend: backend, dtype: dtype,
                                                    keepsMaster: false) }
    }

    public func checkSavedMetadata(_ metadata: [String: String], path: String) throws {
        guard let config = Self.savedConfig(metadata), let saved = metadata["config"] else {
            throw TrainingError.checkpoint(path: path, reason: "not a \(Self.modelKind) checkpoint of `kinema train`")
        }
        guard config == self.config, extraMetadata.allSatisfy({ metadata[$0.key] == $0.value }) else {
            throw TrainingError.checkpoint(path: path, reason: "its model (\(saved)) differs from this run's")
        }
    }
}

extension Latte: CheckpointableVideoModel {
    public static let modelKind = "latte"
    public var extraMetadata: [String: String] { ["video_length": "\(videoLength)"] }

    public static func rebuild(config: PixArtConfig, metadata: [String: String], backend: any Backend, dtype: DType,
                               keepsMaster: Bool) throws -> Latte {
        guard let length = metadata["video_length"].flatMap(Int.init) else {
            throw ModelError.invalidConfig("a Latte checkpoint without video_length")
        }
        return try Latte(config: config, videoLength: length, backend: backend, dtype: dtype, keepsMaster: keepsMaster)
    }
}

extension VideoDiT: CheckpointableVideoModel {
    public static let modelKind = "video-dit"
    public var extraMetadata: [String: String] { [:] }

    public static func rebuild(config: VideoDiTConfig, metadata: [String: String], backend: any Backend, dtype: DType,
                               keepsMaster: Bool) throws -> VideoDiT {
        try VideoDiT(config: config, backend: backend, dtype: dtype, keepsMaster: keepsMaster)
    }
}

extension STDiT: CheckpointableVideoModel {
    public static let modelKind = "stdit"
    public var extraMetadata: [String: String] { ["time_scale": "\(timeScale)"] }

    public static func rebuild(config: PixArtConfig, metadata: [String: String], backend: any Backend, dtype: DType,
                               keepsMaster: Bool) throws -> STDiT {
        try STDiT(config: config, timeScale: metadata["time_scale"].flatMap(Double.init) ?? 1, backend: backend,
                  dtype: dtype, keepsMaster: keepsMaster)
    }
}

/// Text-to-video models from `kinema train` checkpoints.
public enum VideoModelCheckpoint {
    public static let kinds = [Latte.modelKind, STDiT.modelKind, VideoDiT.modelKind]

    /// The model a checkpoint's header describes, with its EMA weights (or the raw ones), and the header.
    public static func load(_ url: URL, backend: any Backend, dtype: DType = .f32,
                            preferEMA: Bool = true) throws -> (any CheckpointableVideoModel, [String: String]) {
        let file = try SafetensorsFile(url: url), metadata = file.metadata
        // One kind per line: a call on an existential metatype here crashes Swift 6.3's SIL generation.
        guard let model: any CheckpointableVideoModel =
                try Latte.rebuild(metadata, backend: backend, dtype: dtype)
                ?? STDiT.rebuild(metadata, backend: backend, dtype: dtype)
                ?? VideoDiT.rebuild(metadata, backend: backend, dtype: dtype) else {
            throw TrainingError.checkpoint(path: url.path, reason: "not a text-to-video checkpoint written by "
                + "`kinema train`: kinema_model '\(metadata["kinema_model"] ?? "none")' with a readable config is "
                + "none of \(kinds.joined(separator: ", "))")
        }
        let prefix = preferEMA && file.names.contains { $0.hasPrefix("ema.") } ? "ema." : "model."
        try model.loadParameters(from: url.path) { name in
            file.contains(prefix + name) ? try file.tensor(prefix + name, on: backend) : nil
        }
        return (model, file.metadata)
    }
}

/// A training checkpoint: one safetensors file with the model (`model.`), its EMA (`ema.`), the AdamW moments
/// (`optimizer.exp_avg.` / `optimizer.exp_avg_sq.`), and in the header the model config (so `kinema sample` and
/// `DiTCheckpoint` read it like any original-layout file) and the training state. The model's weights are its
/// full-precision ones (a bf16 run's f32 master), so the file loads exactly into an f32 model too; the EMA and the
/// moments are f32 as well.
public enum TrainingCheckpoint {
    public static let stateKey = "kinema_training_state"

    /// Writes to a temporary name, flushes and renames (SafetensorsWriter does that), so a crash mid-write leaves
    /// the previous checkpoint intact.
    public static func save(to url: URL, model: some CheckpointableModel, ema: ExponentialMovingAverage,
                            optimizer: AdamW, state: TrainingState, metadata: [String: String] = [:]) throws {
        let tensors = model.stateDict().map { ("model.\($0.name)", $0.tensor) } + ema.stateDict() + optimizer.stateDict()
        let stateJSON = String(decoding: try JSONEncoder().encode(state), as: UTF8.self)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try SafetensorsWriter.write(tensors.map { (name: $0.0, tensor: $0.1) },
                                    metadata: model.checkpointMetadata.merging(metadata) { $1 }.merging(
                                        [stateKey: stateJSON, "format": "kinema-training-checkpoint-1"]) { $1 },
                                    to: url, backend: model.backend)
    }

    public static func readState(_ file: SafetensorsFile) throws -> TrainingState {
        guard let text = file.metadata[stateKey] else {
            throw TrainingError.checkpoint(path: file.url.path, reason: "no training state in its header; it holds "
                + "weights only and can be sampled from, but --resume needs a checkpoint written by `kinema train`")
        }
        do {
            return try JSONDecoder().decode(TrainingState.self, from: Data(text.utf8))
        } catch {
            throw TrainingError.checkpoint(path: file.url.path, reason: "unreadable training state: \(error)")
        }
    }

    /// Restores weights (into the master, then the compute copy from it), EMA and optimizer moments in place and
    /// returns the saved state.
    public static func restore(from url: URL, model: some CheckpointableModel, ema: ExponentialMovingAverage,
                               optimizer: AdamW) throws -> TrainingState {
        let file = try SafetensorsFile(url: url)
        let state = try readState(file)
        try model.checkSavedMetadata(file.metadata, path: url.path)
        let backend = model.backend
        func lookup(_ name: String) throws -> Tensor {
            guard file.contains(name) else { throw SafetensorsError.missingTensor(file: url.path, tensor: name) }
            return try file.tensor(name, on: backend)
        }
        try model.loadParameters(from: url.path) { try lookup("model.\($0)") }
        try ema.load(lookup)
        try optimizer.load(step: state.step, lookup)
        return state
    }
}

public enum TrainingError: Error, CustomStringConvertible {
    case checkpoint(path: String, reason: String)
    case options(String)

    public var description: String {
        switch self {
        case .checkpoint(let path, let reason): return "checkpoint \(path): \(reason)"
        case .options(let reason): return "invalid training options: \(reason)"
        }
    }
}
