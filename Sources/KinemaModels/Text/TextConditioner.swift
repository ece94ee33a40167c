import Foundation
import KinemaTensor

/// Caption states for a text-conditioned model: a frozen text encoder and its tokenizer from one folder (BERT, T5 or
/// CLIP; all-MiniLM-L6-v2 by default), every caption padded or cut to `length` tokens so batches stack. Encoded
/// captions are kept on the host, so a training run encodes each distinct caption once. The empty caption is the
/// null caption of classifier-free guidance (what diffusers' pipelines pass as the default negative prompt).
public final class TextConditioner {
    public let folder: String
    public let encoder: TextEncoder
    public let length: Int
    public var tokenizer: any CaptionTokenizer { encoder.tokenizer }
    public var width: Int { encoder.width }
    public let backend: any Backend
    private var cache: [String: (states: [Float], mask: [Int32])] = [:]

    /// The model cache: `KINEMA_CACHE`, else ~/.cache/kinema.
    public static func cacheDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let configured = environment["KINEMA_CACHE"], !configured.isEmpty { return URL(fileURLWithPath: configured) }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/kinema")
    }

    /// Where scripts/fetch-minilm unpacks all-MiniLM-L6-v2.
    public static var defaultFolder: String { cacheDirectory().appendingPathComponent("all-MiniLM-L6-v2").path }

    public init(folder: String, backend: any Backend, length: Int) throws {
        let encoder = try TextEncoder(folder: folder, backend: backend)
        guard length >= 2 && length <= encoder.maxPositions else {
            throw ModelError.invalidConfig("caption length \(length) must be in 2...\(encoder.maxPositions)")
        }
        encoder.tokenizer.template.maxLength = length
        encoder.tokenizer.template.padsToMaxLength = true
        self.encoder = encoder
        self.backend = backend
        self.folder = folder
        self.length = length
    }

    /// Caption states [B, L, D] (f32) and their mask (i32 [B, L]) on the encoder's backend.
    public func encode(_ captions: [String]) -> (states: Tensor, mask: Tensor) {
        let (states, mask) = encodeOnHost(captions)
        return (backend.upload(states, shape: [captions.count, length, width], dtype: .f32),
                backend.upload(mask, shape: [captions.count, length]))
    }

    /// The same on the host, row-major (what a latent cache stores).
    ///
    /// Each caption not yet cached is encoded alone. Batched, a caption's states depended in their last bits on the
    /// captions beside it (a BLAS may pick its kernels by the number of rows), so a run resumed with a cold cache
    /// drifted from the run it continues; alone, they are the same whenever and with whatever they are asked for.
    /// The price is one encoder pass per new caption; `kinema preprocess --cache` pays it once per dataset.
    public func encodeOnHost(_ captions: [String]) -> (states: [Float], mask: [Int32]) {
        for caption in captions where cache[caption] == nil {
            let encoded = tokenizer.encode(caption)
            let ids = backend.upload(encoded.ids, shape: [1, length])
            let mask = backend.upload(encoded.mask, shape: [1, length])
            let states = encoder.forward(inputIDs: ids, hostIDs: encoded.ids, attentionMask: mask).lastHiddenState
            cache[caption] = (backend.download(backend.cast(states, to: .f32)), encoded.mask)
        }
        let rows = captions.map { cache[$0]! }
        return (rows.flatMap(\.states), rows.flatMap(\.mask))
    }
}
