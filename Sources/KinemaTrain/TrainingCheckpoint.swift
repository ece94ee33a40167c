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

/// A training checkpoint: one safetensors file with the model (`model.`), its EMA (`ema.`), the AdamW moments
/// (`optimizer.exp_avg.` / `optimizer.exp_avg_sq.`), and in the header the model config (so `kinema sample` and
/// `DiTCheckpoint` read it like any original-layout file) and the training state. The model's weights are its
/// full-precision ones (a bf16 run's f32 master), so the file loads exactly into an f32 model too; the EMA and the
/// moments are f32 as well.
public enum TrainingCheckpoint {
    public static let stateKey = "kinema_training_state"

    /// Writes to a temporary name, flushes and renames (SafetensorsWriter does that), so a crash mid-write leaves
    /// the previous checkpoint intact.
    public static func save(to url: URL, model: DiT, ema: ExponentialMovingAverage, optimizer: AdamW,
                            state: TrainingState) throws {
        let tensors = model.stateDict().map { ("model.\($0.name)", $0.tensor) } + ema.stateDict() + optimizer.stateDict()
        let stateJSON = String(decoding: try JSONEncoder().encode(state), as: UTF8.self)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try SafetensorsWriter.write(tensors.map { (name: $0.0, tensor: $0.1) },
                                    metadata: ["config": model.config.json, stateKey: stateJSON,
                                               "format": "kinema-training-checkpoint-1"],
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
    public static func restore(from url: URL, model: DiT, ema: ExponentialMovingAverage, optimizer: AdamW) throws -> TrainingState {
        let file = try SafetensorsFile(url: url)
        let state = try readState(file)
        if let saved = file.metadata["config"], try DiTConfig(json: saved) != model.config {
            throw TrainingError.checkpoint(path: url.path, reason: "its model config (\(saved)) differs from this run's")
        }
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
