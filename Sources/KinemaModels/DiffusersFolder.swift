import Foundation

/// What a diffusers model folder holds, read from its config.json.
public enum DiffusersFolder {
    /// The `_class_name` of `path`'s config.json (e.g. "PixArtTransformer2DModel"), for a transformers folder the
    /// encoder its `model_type` names (bert: "BertModel"), or nil when `path` is not a folder with a readable one.
    public static func className(_ path: String) -> String? {
        let config = URL(fileURLWithPath: path).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: config.path),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        if let name = json["_class_name"] as? String { return name }
        let encoders = ["bert": "BertModel"]
        return (json["model_type"] as? String).flatMap { encoders[$0] } ?? (json["architectures"] as? [String])?.first
    }
}
