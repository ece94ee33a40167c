import Foundation
import KinemaCPU
import KinemaData
import KinemaDiffusion
import KinemaModels
import KinemaTensor
import KinemaTestSupport
import KinemaTrain
import XCTest

/// The text-to-video loop on a tiny Latte (and STDiT, and video DiT) with the random-weight BERT fixture as its text
/// encoder.
final class VideoTrainerTests: XCTestCase {
    let backend = CPUBackend()

    func makeTrainer(steps: Int, kind: String = Latte.modelKind) throws -> VideoTrainer {
        let text = try TextConditioner(folder: Fixtures.url("bert").path, backend: backend, length: 8)
        let config = PixArtConfig(sampleSize: 8, patchSize: 4, inChannels: 3, outChannels: 3, hiddenSize: 32, depth: 1,
                                  numHeads: 2, captionChannels: text.width)
        let model: any CheckpointableVideoModel
        switch kind {
        case STDiT.modelKind: model = try STDiT(config: config, backend: backend, seed: 4)
        case VideoDiT.modelKind:
            model = try VideoDiT(config: VideoDiTConfig(patchSize: 4, temporalPatch: 1, inChannels: 3, outChannels: 3,
                                                        hiddenSize: 32, depth: 1, numHeads: 2, captionChannels: text.width,
                                                        conditioning: .inContext),
                                 backend: backend, seed: 4)
        default: model = try Latte(config: config, videoLength: 3, backend: backend, seed: 4)
        }
        let options = TrainingOptions(batchSize: 4, steps: steps, learningRate: 1e-3, warmupSteps: 1, seed: 9,
                                      checkpointEvery: 0, logEvery: 1)
        return try VideoTrainer(model: model, text: text, data: SyntheticVideos(frames: 3, imageSize: 8, count: 64),
                                objective: .rectifiedFlow(RectifiedFlow(shift: nil)), options: options, captionDropout: 0.3,
                                firstFrameProbability: 0.5)
    }

    /// Two steps, a checkpoint, a fresh trainer resuming for two more: the same weights, EMA and loss as four
    /// steps straight; for Latte, STDiT and the video DiT. A checkpoint of one does not resume another.
    func testResumeIsBitExact() throws {
        for kind in VideoModelCheckpoint.kinds {
            let straight = try makeTrainer(steps: 4, kind: kind)
            var losses: [Double] = []
            for _ in 0..<4 { losses.append(straight.trainStep().loss) }
            XCTAssertTrue(losses.allSatisfy(\.isFinite))
            let first = try makeTrainer(steps: 4, kind: kind)
            for _ in 0..<2 { _ = first.trainStep() }
            let url = Fixtures.temporaryDirectory("kinema-video-resume").appendingPathComponent("checkpoint.safetensors")
            try first.saveCheckpoint(to: url)
            let resumed = try makeTrainer(steps: 4, kind: kind)
            try resumed.resume(from: url)
            XCTAssertEqual(resumed.step, 2)
            var resumedLosses: [Double] = []
            for _ in 0..<2 { resumedLosses.append(resumed.trainStep().loss) }
            XCTAssertEqual(resumedLosses, Array(losses[2...]))
            XCTAssertEqual(backend.download(resumed.model.arena.weights), backend.download(straight.model.arena.weights))
            let file = try SafetensorsFile(url: url)
            XCTAssertEqual(file.metadata["kinema_model"], kind)
            XCTAssertEqual(file.metadata["frames"], "3")
            XCTAssertEqual(file.metadata["timestep_shift"], "none")
            let other = VideoModelCheckpoint.kinds.first { $0 != kind }!
            XCTAssertThrowsError(try makeTrainer(steps: 4, kind: other).resume(from: url))
            let (loaded, _) = try VideoModelCheckpoint.load(url, backend: backend)
            XCTAssertEqual(type(of: loaded).modelKind, kind)
        }
    }

    /// A checkpoint samples back as clips of the trained size; a given first frame is the clip's first frame.
    func testGeneratorSamplesClipsAndKeepsTheFirstFrame() throws {
        let trainer = try makeTrainer(steps: 1)
        _ = trainer.trainStep()
        let url = Fixtures.temporaryDirectory("kinema-video-sample").appendingPathComponent("checkpoint.safetensors")
        try trainer.saveCheckpoint(to: url)
        let (generator, frames, size) = try VideoGenerator.load(checkpoint: url, backend: backend, steps: 3, cfgScale: 3)
        XCTAssertEqual(frames, 3)
        XCTAssertEqual(size, 8)
        let first = SyntheticVideos(frames: 3, imageSize: 8, count: 4).video(at: 1)[0].chwFloats()
        let samples = try generator.generate(prompts: ["a red square moving left", "a blue circle moving up"],
                                             frames: 3, height: 8, width: 8, seed: 5, firstFrames: [first, nil])
        XCTAssertEqual(samples.shape, [2, 3, 3, 8, 8])
        let clips = generator.videos(samples)
        XCTAssertEqual(clips.count, 2)
        XCTAssertEqual(clips[0].count, 3)
        XCTAssertEqual(clips[0][0], RGBImage(chwFloats: first, width: 8, height: 8))
        XCTAssertThrowsError(try generator.generate(prompts: ["x"], frames: 3, height: 6, width: 8, seed: 1))
        // A rectified-flow checkpoint samples by Euler steps: an IDDPM sampler for it is refused, not ignored.
        XCTAssertThrowsError(try VideoGenerator.load(checkpoint: url, backend: backend, steps: 3, cfgScale: 3,
                                                     diffusionMethod: .ddpm))
    }

    /// With a VAE the model (an STDiT) learns and samples the clips' latents; sampling decodes them back to frames.
    func testLatentTrainingAndSamplingThroughTheVAE() throws {
        let text = try TextConditioner(folder: Fixtures.url("bert").path, backend: backend, length: 8)
        let vae = try AutoencoderKLCheckpoint.load(folder: Fixtures.url("vae").path, backend: backend)
        let config = PixArtConfig(sampleSize: 4, patchSize: 2, inChannels: 4, outChannels: 4, hiddenSize: 32, depth: 1,
                                  numHeads: 2, captionChannels: text.width)
        let model = try STDiT(config: config, backend: backend, seed: 4)  // STDiT here; Latte in the tests above
        let options = TrainingOptions(batchSize: 2, steps: 2, learningRate: 1e-3, seed: 9, checkpointEvery: 0, logEvery: 1)
        let trainer = try VideoTrainer(model: model, text: text, data: SyntheticVideos(frames: 3, imageSize: 8, count: 8),
                                       objective: .rectifiedFlow(RectifiedFlow(shift: nil)), options: options, firstFrameProbability: 0.5,
                                       vae: vae)
        XCTAssertTrue(trainer.trainStep().loss.isFinite)
        let url = Fixtures.temporaryDirectory("kinema-latent-video").appendingPathComponent("checkpoint.safetensors")
        try trainer.saveCheckpoint(to: url)
        let (generator, frames, size) = try VideoGenerator.load(checkpoint: url, backend: backend, steps: 2, cfgScale: 2)
        XCTAssertNotNil(generator.vae)
        XCTAssertEqual(frames, 3)
        let first = SyntheticVideos(frames: 3, imageSize: 8, count: 2).video(at: 0)[0].chwFloats()
        let latents = try generator.generate(prompts: ["a red square moving left"], frames: frames, height: 8, width: 8,
                                             seed: 1, firstFrames: [first])
        XCTAssertEqual(latents.shape, [1, 4, 3, 4, 4])
        let clips = generator.videos(latents)
        XCTAssertEqual(clips[0].count, 3)
        XCTAssertEqual(clips[0][0].width, 8)
        XCTAssertEqual(size, 8, "the clip size is recorded in pixels")
        // The first frame's latents are exactly the VAE's encoding of the given image.
        let encoded = backend.download(vae.encodeVideo(backend.upload(first, shape: [1, 3, 1, 8, 8], dtype: .f32)))
        let kept = backend.download(backend.narrow(latents, axis: 2, start: 0, length: 1))
        XCTAssertEqual(kept, encoded)
    }

    /// IDDPM on a video model: the hybrid loss (MSE + variational bound) with learned variance, first-frame
    /// conditioning in training, the objective in the checkpoint, DDIM sampling with guidance on the ε channels, and
    /// a given first frame kept as the clip's first frame.
    func testIDDPMTrainsAndSamples() throws {
        let text = try TextConditioner(folder: Fixtures.url("bert").path, backend: backend, length: 8)
        let model = try VideoDiT(config: VideoDiTConfig(patchSize: 4, temporalPatch: 1, inChannels: 3, outChannels: 6,
                                                        hiddenSize: 32, depth: 1, numHeads: 2, captionChannels: text.width,
                                                        conditioning: .adaLNZero), backend: backend, seed: 2)
        let options = TrainingOptions(batchSize: 4, steps: 3, learningRate: 1e-3, seed: 9, checkpointEvery: 0, logEvery: 1)
        let data = SyntheticVideos(frames: 3, imageSize: 8, count: 64)
        let trainer = try VideoTrainer(model: model, text: text, data: data, objective: .iddpm(GaussianDiffusion()),
                                       options: options, firstFrameProbability: 0.5)
        for _ in 0..<3 {
            let metrics = trainer.trainStep()
            XCTAssertTrue(metrics.loss.isFinite && (metrics.vb ?? .nan).isFinite, "\(metrics)")
        }
        let url = Fixtures.temporaryDirectory("kinema-iddpm-video").appendingPathComponent("checkpoint.safetensors")
        try trainer.saveCheckpoint(to: url)
        XCTAssertEqual(try SafetensorsFile(url: url).metadata["objective"], "iddpm")
        let (generator, frames, size) = try VideoGenerator.load(checkpoint: url, backend: backend, steps: 3, cfgScale: 2)
        XCTAssertNotNil(generator.diffusion)
        let first = SyntheticVideos(frames: 3, imageSize: 8, count: 4).video(at: 2)[0].chwFloats()
        let clips = try generator.generate(prompts: ["a red square moving left", "a blue circle moving up"],
                                           frames: frames, height: size, width: size, seed: 1, firstFrames: [first, nil])
        XCTAssertEqual(clips.shape, [2, 3, 3, 8, 8])
        XCTAssertTrue(backend.download(clips).allSatisfy(\.isFinite))
        XCTAssertEqual(generator.videos(clips)[0][0], RGBImage(chwFloats: first, width: 8, height: 8))
    }
}
