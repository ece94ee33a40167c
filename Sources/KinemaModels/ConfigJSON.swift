import Foundation

/// A model's config.json with typed reads whose errors name the file and the key.
struct ConfigJSON {
    let json: [String: Any]
    let path: String

    func int(_ key: String) throws -> Int {
        guard let value = (json[key] as? NSNumber)?.intValue else {
            throw ModelError.badCheckpoint(path: path, reason: "config.json lacks integer '\(key)'")
        }
        return value
    }

    func int(_ key: String, default value: Int) -> Int { (json[key] as? NSNumber)?.intValue ?? value }
    func double(_ key: String, default value: Double) -> Double { (json[key] as? NSNumber)?.doubleValue ?? value }
    func string(_ key: String, default value: String) -> String { json[key] as? String ?? value }

    func fail(_ reason: String) -> ModelError { .badCheckpoint(path: path, reason: reason) }
}
