import Foundation

/// What a diffusers model folder holds, read from its config.json.
public enum DiffusersFolder {
    /// The `_class_name` of `path`'s config.json (e.g. "PixArtTransformer2DModel"), or nil when `path` is not a folder
    /// with a readable one.
    public static func className(_ path: String) -> String? {
        let config = URL(fileURLWithPath: path).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: config.path),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return json["_class_name"] as? String
    }
}
