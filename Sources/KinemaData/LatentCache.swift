import Foundation
import KinemaTensor

/// A latent cache's index (`latent-cache.json`, written last by `kinema preprocess --cache`): the shards of encoded
/// clips, one clip shape each, and what encoded them, so training reads latents and caption states directly and
/// sampling later knows the VAE and the text encoder to use.
public struct LatentCacheIndex: Codable, Equatable, Sendable {
    public struct Shard: Codable, Equatable, Sendable {
        /// The shard's file (beside the index): f32 `latents` [N, C, T, h, w], f32 `states` [N, L, D], i32 `mask` [N, L].
        public var file: String
        public var count: Int
        /// The clips' shape in pixels (what they were cut to before encoding).
        public var clip: VideoBucket

        public init(file: String, count: Int, clip: VideoBucket) { (self.file, self.count, self.clip) = (file, count, clip) }
    }

    public static let fileName = "latent-cache.json"

    /// Whether `path` is a folder holding a cache index.
    public static func isCache(_ path: String) -> Bool {
        FileManager.default.fileExists(atPath: URL(fileURLWithPath: path).appendingPathComponent(fileName).path)
    }
    public static let nullCaptionFile = "null-caption.safetensors"

    public var shards: [Shard]
    /// Every clip's caption, in shard order.
    public var captions: [String]
    public var textEncoder: String
    public var captionLength: Int
    public var captionWidth: Int
    /// The VAE folder the latents came from ("" for pixel clips) and its latent channels (3 for pixels).
    public var vae: String
    public var latentChannels: Int
    /// Pixels per latent along a side (1 for pixel clips).
    public var downsampling: Int
    public var heldOutCaptions: [String]

    public init(shards: [Shard], captions: [String], textEncoder: String, captionLength: Int, captionWidth: Int,
                vae: String, latentChannels: Int, downsampling: Int, heldOutCaptions: [String]) {
        (self.shards, self.captions, self.textEncoder) = (shards, captions, textEncoder)
        (self.captionLength, self.captionWidth, self.vae) = (captionLength, captionWidth, vae)
        (self.latentChannels, self.downsampling, self.heldOutCaptions) = (latentChannels, downsampling, heldOutCaptions)
    }
}

/// Clips encoded ahead of time: their latents (or pixels) and caption states, read from a cache's shards.
public protocol EncodedVideoSource: VideoDataSource {
    var index: LatentCacheIndex { get }
    /// Latents [B, C, T, h, w], caption states [B, L, D] and masks [B, L] of the clips at `indices` (one shape).
    func encodedBatch(indices: [Int]) throws -> (latents: [Float], shape: [Int], states: [Float], mask: [Int32],
                                                 captions: [String])
    /// The empty caption's states [L, D] and mask [L]: what caption dropout puts in a caption's place.
    var nullCaption: (states: [Float], mask: [Int32]) { get }
}

/// A latent cache opened for training (`kinema train --data CACHE_FOLDER`).
public final class LatentCacheDataset: EncodedVideoSource, @unchecked Sendable {
    public let folder: URL
    public let index: LatentCacheIndex
    public let nullCaption: (states: [Float], mask: [Int32])
    private let files: [SafetensorsFile]
    /// Clip number → (shard, row).
    private let locations: [(shard: Int, row: Int)]
    /// The batch size of each clip shape that has its own (`--buckets` with sizes, given at training time).
    public let batchSizes: [VideoBucket: Int]

    /// The cache at `path`; `batchSizes` (each a shape of the cache's clips) give shapes their own batch size.
    public init(folder path: String, batchSizes: [VideoBucket: Int] = [:]) throws {
        let folder = URL(fileURLWithPath: path)
        self.folder = folder
        let indexURL = folder.appendingPathComponent(LatentCacheIndex.fileName)
        guard let data = FileManager.default.contents(atPath: indexURL.path) else {
            throw DataError.fileNotFound(path: indexURL.path)
        }
        let index: LatentCacheIndex
        do {
            index = try JSONDecoder().decode(LatentCacheIndex.self, from: data)
        } catch {
            throw DataError.emptyDataset(path: indexURL.path, reason: "not a latent cache index: \(error)")
        }
        self.index = index
        let files = try index.shards.map { try SafetensorsFile(url: folder.appendingPathComponent($0.file)) }
        self.files = files
        for (shard, file) in zip(index.shards, files) {
            for name in ["latents", "states", "mask"] where !file.contains(name) {
                throw DataError.emptyDataset(path: file.url.path, reason: "the shard lacks `\(name)`")
            }
            guard try file.info("latents").shape.first == shard.count else {
                throw DataError.emptyDataset(path: file.url.path, reason: "the shard holds another count than the index")
            }
        }
        locations = index.shards.enumerated().flatMap { shard, entry in (0..<entry.count).map { (shard, $0) } }
        guard locations.count == index.captions.count, !locations.isEmpty else {
            throw DataError.emptyDataset(path: indexURL.path, reason: "\(locations.count) clips for "
                                         + "\(index.captions.count) captions")
        }
        let shapes = index.shards.map(\.clip)
        if let stranger = batchSizes.keys.first(where: { !shapes.contains($0) }) {
            throw DataError.badOption("a batch size for clips of \(stranger), which \(path) does not hold (its clips: "
                                      + "\(Set(shapes).map(\.description).sorted().joined(separator: ", ")))")
        }
        self.batchSizes = batchSizes
        let null = try SafetensorsFile(url: folder.appendingPathComponent(LatentCacheIndex.nullCaptionFile))
        nullCaption = (try null.floats("states"), try null.floats("mask").map { Int32($0) })
    }

    public var count: Int { locations.count }
    public var frames: Int { index.shards[0].clip.frames }
    public var imageSize: Int { index.shards[0].clip.height }
    public var heldOutCaptions: [String] { index.heldOutCaptions }
    public var clipShapes: [VideoBucket] { Array(Set(index.shards.map(\.clip))).sorted { $0.description < $1.description } }

    /// Clips of one shape may share a batch.
    public var sampleGroups: [SampleGroup]? {
        let shapes = index.shards.map(\.clip)
        return clipShapes.map { shape in
            SampleGroup(locations.indices.filter { shapes[locations[$0].shard] == shape }, batchSize: batchSizes[shape])
        }
    }

    /// `VideoDataSource`: a cache holds no pixels to hand out; training reads `encodedBatch`.
    public func batch(indices: [Int], random: inout RandomStream) -> (videos: [Float], shape: [Int], captions: [String]) {
        preconditionFailure("\(folder.path) is a latent cache: read it with encodedBatch(indices:)")
    }

    public func encodedBatch(indices: [Int]) throws -> (latents: [Float], shape: [Int], states: [Float], mask: [Int32],
                                                        captions: [String]) {
        var latents: [Float] = [], states: [Float] = [], mask: [Int32] = [], shape: [Int]?
        for index in indices {
            let (shard, row) = locations[index], file = files[shard]
            let latentShape = try file.info("latents").shape
            precondition(shape == nil || shape! == Array(latentShape.dropFirst()), "a batch mixes clip shapes")
            shape = Array(latentShape.dropFirst())
            latents += try Self.row(row, of: "latents", in: file)
            states += try Self.row(row, of: "states", in: file)
            mask += try Self.row(row, of: "mask", in: file).map { Int32($0) }
        }
        return (latents, [indices.count] + shape!, states, mask, indices.map { index.captions[$0] })
    }

    /// Row `row` (along the first axis) of a tensor as floats, decoded as every safetensors read is.
    private static func row(_ row: Int, of name: String, in file: SafetensorsFile) throws -> [Float] {
        let (dtype, shape) = try file.info(name)
        let size = shape.dropFirst().reduce(1, *) * dtype.byteSize
        return try file.withBytes(name) { bytes in
            decodeFloats(UnsafeRawBufferPointer(rebasing: bytes[(row * size)..<((row + 1) * size)]), dtype: dtype)
        }
    }
}
