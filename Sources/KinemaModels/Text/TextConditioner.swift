import Foundation
import KinemaTensor

/// Caption states for a text-conditioned model: a WordPiece tokenizer and a frozen BERT encoder from one folder
/// (all-MiniLM-L6-v2 by default), every caption padded or cut to `length` tokens so batches stack. Encoded captions
/// are kept on the host, so a training run encodes each distinct caption once. The empty caption is the null
/// caption of classifier-free guidance (what diffusers' pipelines pass as the default negative prompt).
public final class TextConditioner {
    public let folder: String
    public let tokenizer: WordPieceTokenizer
    public let encoder: BertEncoder
    public let length: Int
    public var width: Int { encoder.config.hiddenSize }
    var backend: any Backend { encoder.backend }
    private var cache: [String: (states: [Float], mask: [Int32])] = [:]

    /// The model cache: `KINEMA_CACHE`, else ~/.cache/kinema.
    public static func cacheDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let configured = environment["KINEMA_CACHE"], !configured.isEmpty { return URL(fileURLWithPath: configured) }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/kinema")
    }

    /// Where scripts/fetch-minilm unpacks all-MiniLM-L6-v2.
    public static var defaultFolder: String { cacheDirectory().appendingPathComponent("all-MiniLM-L6-v2").path }

    public init(folder: String, backend: any Backend, length: Int) throws {
        guard FileManager.default.fileExists(atPath: URL(fileURLWithPath: folder).appendingPathComponent("config.json").path) else {
            throw ModelError.badCheckpoint(path: folder, reason: "no text encoder here (config.json is missing). The "
                + "default, all-MiniLM-L6-v2, is installed by `scripts/fetch-minilm` (make demo runs it); or pass "
                + "--text-encoder with a BERT folder (config.json, model.safetensors, vocab.txt or tokenizer.json)")
        }
        let base = try WordPieceTokenizer(folder: folder)
        let encoder = try BertCheckpoint.load(folder: folder, backend: backend)
        let config = encoder.config
        guard length >= 2 && length <= config.maxPositions else {
            throw ModelError.invalidConfig("caption length \(length) must be in 2...\(config.maxPositions)")
        }
        guard base.vocabulary.values.allSatisfy({ Int($0) < config.vocabSize }) else {
            throw ModelError.badCheckpoint(path: folder, reason: "the tokenizer's ids exceed the encoder's vocabulary "
                                           + "of \(config.vocabSize)")
        }
        self.encoder = encoder
        tokenizer = try WordPieceTokenizer(vocabulary: base.vocabulary, lowercase: base.lowercase,
                                           stripAccents: base.stripAccents, maxLength: length, padsToMaxLength: true,
                                           maxCharactersPerWord: base.maxCharactersPerWord)
        self.folder = folder
        self.length = length
    }

    /// Caption states [B, L, D] (f32) and their mask (i32 [B, L]) on the encoder's backend.
    public func encode(_ captions: [String]) -> (states: Tensor, mask: Tensor) {
        let missing = Array(Set(captions.filter { cache[$0] == nil }))
        if !missing.isEmpty {
            let encoded = missing.map(tokenizer.encode)
            let ids = backend.upload(encoded.flatMap(\.ids), shape: [missing.count, length])
            let mask = backend.upload(encoded.flatMap(\.mask), shape: [missing.count, length])
            let states = backend.download(backend.cast(encoder.forward(inputIDs: ids, attentionMask: mask).lastHiddenState,
                                                       to: .f32))
            let stride = length * width
            for (row, caption) in missing.enumerated() {
                cache[caption] = (Array(states[(row * stride)..<((row + 1) * stride)]), encoded[row].mask)
            }
        }
        let rows = captions.map { cache[$0]! }
        return (backend.upload(rows.flatMap(\.states), shape: [captions.count, length, width], dtype: .f32),
                backend.upload(rows.flatMap(\.mask), shape: [captions.count, length]))
    }
}
