import Foundation
import KinemaData
import KinemaModels
import KinemaTensor

/// Writes a latent cache: every clip of a video dataset encoded by the VAE (or kept as pixels) and the text
/// encoder, into safetensors shards of one clip shape each, then the index. Shards are written to temporary names
/// and renamed, and the index last, so a folder with an index is a complete cache. Each cached clip keeps the
/// temporal crop drawn for it here (as Open-Sora's cached features do); `cropsPerClip` passes over the data draw
/// that many crops of each video, so training on the cache still sees several parts of a long video (a cached clip
/// per crop, its caption repeated).
public enum LatentCacheWriter {
    public static func write(data: any VideoDataSource, vae: AutoencoderKL?, text: TextConditioner, to folder: URL,
                             shardSize: Int = 256, batchSize: Int = 8, cropsPerClip: Int = 1, seed: UInt64 = 0,
                             progress: (Int, Int) -> Void = { _, _ in }) throws -> LatentCacheIndex {
        precondition(shardSize > 0 && batchSize > 0 && cropsPerClip > 0,
                     "shard and batch sizes and crops per clip must be positive")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let backend = text.backend, shapes = data.clipShapes
        var random = RandomStream(seed: seed)
        var shards: [LatentCacheIndex.Shard] = [], captions: [String] = [], done = 0
        let groups = data.sampleGroups?.map(\.indices) ?? [Array(0..<data.count)]
        for group in Array(repeating: groups, count: cropsPerClip).joined() {
            for start in stride(from: 0, to: group.count, by: shardSize) {
                let members = Array(group[start..<min(start + shardSize, group.count)])
                var latents: [Float] = [], states: [Float] = [], mask: [Int32] = [], latentShape: [Int] = [], clip: [Int] = []
                for batchStart in stride(from: 0, to: members.count, by: batchSize) {
                    let indices = Array(members[batchStart..<min(batchStart + batchSize, members.count)])
                    let batch = data.batch(indices: indices, random: &random)
                    let pixels = backend.upload(batch.videos, shape: batch.shape, dtype: .f32)
                    let encoded = vae.map { backend.cast($0.encodeVideo(pixels), to: .f32) } ?? pixels
                    latents += backend.download(encoded)
                    latentShape = encoded.shape
                    clip = batch.shape
                    let (captionStates, captionMask) = text.encodeOnHost(batch.captions)
                    states += captionStates
                    mask += captionMask
                    captions += batch.captions
                    done += indices.count
                    progress(done, data.count * cropsPerClip)
                }
                let name = String(format: "shard-%05d.safetensors", shards.count)
                let entries: [(name: String, dtype: DType, shape: [Int], bytes: [UInt8])] = [
                    ("latents", .f32, [members.count] + Array(latentShape.dropFirst()), bytes(latents)),
                    ("states", .f32, [members.count, text.length, text.width], bytes(states)),
                    ("mask", .i32, [members.count, text.length], bytes(mask)),
                ]
                try SafetensorsWriter.write(entries, to: folder.appendingPathComponent(name))
                let shape = VideoBucket(height: clip[3], width: clip[4], frames: clip[2])
                precondition(shapes.contains(shape), "a shard of \(shape), a shape the data does not list")
                shards.append(LatentCacheIndex.Shard(file: name, count: members.count, clip: shape))
            }
        }
        let (nullStates, nullMask) = text.encodeOnHost([""])
        let null: [(name: String, dtype: DType, shape: [Int], bytes: [UInt8])] = [
            ("states", .f32, [text.length, text.width], bytes(nullStates)),
            ("mask", .i32, [text.length], bytes(nullMask)),
        ]
        try SafetensorsWriter.write(null, to: folder.appendingPathComponent(LatentCacheIndex.nullCaptionFile))
        let index = LatentCacheIndex(shards: shards, captions: captions, textEncoder: text.folder,
                                     captionLength: text.length, captionWidth: text.width, vae: vae?.folder ?? "",
                                     latentChannels: vae?.config.latentChannels ?? 3,
                                     downsampling: vae?.config.downsampling ?? 1,
                                     heldOutCaptions: data.heldOutCaptions)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(index), to: folder.appendingPathComponent(LatentCacheIndex.fileName))
        return index
    }

    private static func bytes<T>(_ values: [T]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
}
