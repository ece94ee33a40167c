import Foundation
import KinemaCPU
import KinemaData
import KinemaDiffusion
import KinemaModels
import KinemaTensor
import KinemaTestSupport
import KinemaTrain
import XCTest

/// A latent cache: clips of two sizes encoded by the SD-VAE fixture and captions by the BERT fixture into shards,
/// read back exactly, and trained on without either model.
final class LatentCacheTests: XCTestCase {
    let backend = CPUBackend()

    /// Four 4-frame videos, two 16×16 and two 16×24 (exactly as long as a clip, so the crop is fixed), as a CSV.
    func makeCSV() throws -> URL {
        let folder = Fixtures.temporaryDirectory("kinema-cache-videos")
        let source = SyntheticVideos(frames: 4, imageSize: 24, count: 8, seed: 4)
        var lines = ["path,text"]
        for index in 0..<4 {
            let width = index < 2 ? 16 : 24
            let frames = source.video(at: index).map { $0.resized(width: width, height: 16) }
            try FFmpeg.writeVideo(frames, fps: 8, toPath: folder.appendingPathComponent("\(index).mp4").path)
            lines.append("\(index).mp4,\(source.caption(at: index))")
        }
        let csv = folder.appendingPathComponent("videos.csv")
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: csv)
        return csv
    }

    /// The bucketed CSV dataset and the two encoders a cache is written with.
    func makeInputs() throws -> (data: VideoCSVDataset, text: TextConditioner, vae: AutoencoderKL) {
        let csv = try makeCSV()
        return (try VideoCSVDataset(csv: csv.path, frames: 4, imageSize: 16,
                                    buckets: try VideoBuckets(spec: "16x16x4,16x24x4")),
                try TextConditioner(folder: Fixtures.url("bert").path, backend: backend, length: 6),
                try AutoencoderKLCheckpoint.load(folder: Fixtures.url("vae").path, backend: backend))
    }

    func testWritesShardsPerShapeAndReadsThemBackExactly() throws {
        let (data, text, vae) = try makeInputs()
        let folder = Fixtures.temporaryDirectory("kinema-cache")
        let index = try LatentCacheWriter.write(data: data, vae: vae, text: text, to: folder, shardSize: 1, batchSize: 2)
        XCTAssertEqual(index.shards.map(\.clip.description), ["16x16x4", "16x16x4", "16x24x4", "16x24x4"])
        XCTAssertEqual(index.downsampling, vae.config.downsampling)
        let cache = try LatentCacheDataset(folder: folder.path)
        XCTAssertEqual(cache.count, 4)
        XCTAssertEqual(cache.sampleGroups, [SampleGroup([0, 1]), SampleGroup([2, 3])])
        let wide = VideoBucket(height: 16, width: 24, frames: 4)
        XCTAssertEqual(try LatentCacheDataset(folder: folder.path, batchSizes: [wide: 1]).sampleGroups,
                       [SampleGroup([0, 1]), SampleGroup([2, 3], batchSize: 1)])
        XCTAssertThrowsError(try LatentCacheDataset(folder: folder.path,
                                                    batchSizes: [VideoBucket(height: 8, width: 8, frames: 4): 1]))
        // Clip 2 (16×24): the cached latents are the VAE's encoding of the clip, the states the encoder's.
        let batch = try cache.encodedBatch(indices: [2])
        let clip = try data.clip(at: 2, start: 0).flatMap { $0.chwFloats() }  // [F][C, H, W]
        var pixels = [Float](repeating: 0, count: clip.count)
        let plane = 16 * 24
        for f in 0..<4 { for c in 0..<3 {
            let from = (f * 3 + c) * plane, to = (c * 4 + f) * plane
            pixels.replaceSubrange(to..<(to + plane), with: clip[from..<(from + plane)])
        } }
        let expected = backend.download(vae.encodeVideo(backend.upload(pixels, shape: [1, 3, 4, 16, 24], dtype: .f32)))
        XCTAssertEqual(batch.shape, [1, vae.config.latentChannels, 4, 16 / vae.config.downsampling,
                                     24 / vae.config.downsampling])
        XCTAssertLessThan(relativeError(batch.latents, expected), 1e-6)
        let (states, mask) = text.encode([batch.captions[0]])
        XCTAssertEqual(batch.states, backend.download(states))
        XCTAssertEqual(batch.mask, backend.download(mask).map { Int32($0) })
        XCTAssertEqual(cache.nullCaption.states, backend.download(text.encode([""]).states))
    }

    /// `cropsPerClip`: each 12-frame video is cached as three 4-frame clips, each a real crop of it (the pixels of
    /// frames s … s + 3 for some start s), not all the same, with the caption repeated.
    func testCachesSeveralCropsOfALongVideo() throws {
        let folder = Fixtures.temporaryDirectory("kinema-cache-crops")
        let source = SyntheticVideos(frames: 12, imageSize: 16, count: 2, seed: 8)
        var lines = ["path,text,num_frames"]  // the frame count lets the crop start anywhere in 0...8
        for index in 0..<2 {
            let path = folder.appendingPathComponent("\(index).mp4").path
            try FFmpeg.writeVideo(source.video(at: index), fps: 8, toPath: path)
            lines.append("\(index).mp4,\(source.caption(at: index)),12")
        }
        let csv = folder.appendingPathComponent("videos.csv")
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: csv)
        let data = try VideoCSVDataset(csv: csv.path, frames: 4, imageSize: 16)
        let text = try TextConditioner(folder: Fixtures.url("bert").path, backend: backend, length: 6)
        let cacheFolder = folder.appendingPathComponent("cache")
        let index = try LatentCacheWriter.write(data: data, vae: nil, text: text, to: cacheFolder, cropsPerClip: 3)
        XCTAssertEqual(index.captions, Array(repeating: [source.caption(at: 0), source.caption(at: 1)], count: 3)
            .flatMap { $0.map(\.description) })
        let cache = try LatentCacheDataset(folder: cacheFolder.path)
        XCTAssertEqual(cache.count, 6)
        // [C, F, H, W] pixels of video 0 from frame `start`, as the cache keeps them without a VAE.
        func crop(_ start: Int) throws -> [Float] {
            let frames = try data.clip(at: 0, start: start).map { $0.chwFloats() }  // [F][C, H, W]
            return (0..<3).flatMap { c in frames.flatMap { $0[(c * 256)..<((c + 1) * 256)] } }
        }
        let crops = try (0...8).map(crop)
        var starts: [Int] = []
        for cached in [0, 2, 4] {
            let latents = try cache.encodedBatch(indices: [cached]).latents
            let start = crops.firstIndex { relativeError(latents, $0) < 1e-6 }
            XCTAssertNotNil(start, "cached clip \(cached) is no crop of video 0")
            starts += start.map { [$0] } ?? []
        }
        XCTAssertGreaterThan(Set(starts).count, 1, "the three crops all start at \(starts)")
    }

    /// Training reads the cache with neither model loaded; its checkpoint names the cache's VAE and text encoder,
    /// so sampling decodes.
    func testTrainsFromTheCacheAndSamples() throws {
        let (data, text, vae) = try makeInputs()
        let folder = Fixtures.temporaryDirectory("kinema-cache-train")
        _ = try LatentCacheWriter.write(data: data, vae: vae, text: text, to: folder)
        let cache = try LatentCacheDataset(folder: folder.path)
        let model = try VideoDiT(config: VideoDiTConfig(patchSize: 1, temporalPatch: 2, inChannels: 4, outChannels: 4,
                                                        hiddenSize: 16, depth: 1, numHeads: 2, captionChannels: text.width,
                                                        conditioning: .crossAttention), backend: backend)
        let trainer = try VideoTrainer(model: model, text: nil, data: cache, objective: .rectifiedFlow(RectifiedFlow(shift: nil)),
                                       options: TrainingOptions(batchSize: 2, steps: 3, learningRate: 1e-3, seed: 1,
                                                                checkpointEvery: 0, logEvery: 1),
                                       captionDropout: 0.5)
        for _ in 0..<3 { XCTAssertTrue(trainer.trainStep().loss.isFinite) }
        let url = folder.appendingPathComponent("run/checkpoint.safetensors")
        try trainer.saveCheckpoint(to: url)
        XCTAssertEqual(try SafetensorsFile(url: url).metadata["vae"], vae.folder)
        let (generator, frames, size) = try VideoGenerator.load(checkpoint: url, backend: backend, steps: 1, cfgScale: 2)
        XCTAssertEqual([frames, size], [4, 16])
        let latents = try generator.generate(prompts: ["a red square"], frames: 4, height: 16, width: 24, seed: 1)
        XCTAssertEqual(generator.videos(latents)[0].count, 4)
    }
}
