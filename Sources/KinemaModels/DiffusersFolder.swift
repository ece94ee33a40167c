import Foundation
import KinemaTensor

/// What a diffusers model folder holds, read from its config.json.
public enum DiffusersFolder {
    /// A model folder's config.json as JSON, its path, and the weights file `weightsName` beside it, opened; errors
    /// name the file that is missing or unreadable.
    public static func open(_ folder: String, weights weightsName: String) throws
        -> (json: [String: Any], configPath: String, weights: SafetensorsFile, weightsPath: String) {
        let url = URL(fileURLWithPath: folder)
        let configPath = url.appendingPathComponent("config.json").path
        guard let data = FileManager.default.contents(atPath: configPath),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelError.badCheckpoint(path: configPath, reason: "missing or unreadable config.json")
        }
        let weightsPath = url.appendingPathComponent(weightsName).path
        return (json, configPath, try SafetensorsFile(url: URL(fileURLWithPath: weightsPath)), weightsPath)
    }

    /// The `_class_name` of `path`'s config.json (e.g. "PixArtTransformer2DModel"), for a transformers folder the
    /// encoder its `model_type` names (bert: "BertModel"), or nil when `path` is not a folder with a readable one.
    public static func className(_ path: String) -> String? {
        let config = URL(fileURLWithPath: path).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: config.path),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        if let name = json["_class_name"] as? String { return name }
        let encoders = ["bert": "BertModel", "t5": "T5EncoderModel", "mt5": "T5EncoderModel", "umt5": "T5EncoderModel",
                        "clip_text_model": "CLIPTextModel", "clip": "CLIPTextModel"]
        return (json["model_type"] as? String).flatMap { encoders[$0] } ?? (json["architectures"] as? [String])?.first
    }
}
