import Foundation
import KinemaCPU
import KinemaData
import KinemaTensor
import KinemaTestSupport
import XCTest

/// The release `kinema` binary, which `make test` builds before the tests, run as a user runs it.
enum KinemaCLI {
    struct MissingBinary: Error, CustomStringConvertible {
        let path: String
        var description: String { "\(path) is missing: build it with `swift build -c release` (make test does)" }
    }

    static func binary() throws -> URL {
        let root = Fixtures.directory.deletingLastPathComponent().deletingLastPathComponent()
        let binary = root.appendingPathComponent(".build/release/kinema")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else { throw MissingBinary(path: binary.path) }
        return binary
    }

    /// Runs `kinema arguments…`, asserts it succeeded and returns its standard output (and, when `errors` is
    /// given, its standard error there).
    static func run(_ arguments: [String], errors: UnsafeMutablePointer<String>? = nil, file: StaticString = #filePath,
                    line: UInt = #line) throws -> String {
        let process = Process()
        process.executableURL = try binary()
        process.arguments = arguments
        let output = Pipe(), errorOutput = Pipe()
        process.standardOutput = output
        process.standardError = errors == nil ? FileHandle.standardError : errorOutput
        try process.run()
        // Drain stderr on its own thread so neither pipe can fill up and stall the child.
        final class Collected: @unchecked Sendable { var data = Data() }
        let errorData = Collected()
        let drained = DispatchSemaphore(value: 0)
        if errors != nil {
            DispatchQueue.global().async {
                errorData.data = errorOutput.fileHandleForReading.readDataToEndOfFile()
                drained.signal()
            }
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        if let errors {
            drained.wait()
            errors.pointee = String(decoding: errorData.data, as: UTF8.self)
        }
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertEqual(process.terminationStatus, 0, "kinema \(arguments.joined(separator: " ")) failed:\n\(text)",
                       file: file, line: line)
        return text
    }
}

/// A shorter `make demo`: train a small DiT on the synthetic shapes, and `eval-synthetic` must score far above
/// chance (1/12 ≈ 8%).
final class ShortTrainingTests: XCTestCase {
    func testShortDemoBeatsChanceByFar() throws {
        let folder = Fixtures.temporaryDirectory("kinema-short-demo")
        _ = try KinemaCLI.run(["train", "--data", "synthetic", "--image-size", "16", "--steps", "1000", "--lr", "2e-3",
                               "--batch-size", "32", "--output", folder.path, "--log-every", "250"])
        let report = try KinemaCLI.run(["eval-synthetic", "--checkpoint",
                                        folder.appendingPathComponent("checkpoint.safetensors").path,
                                        "--per-class", "4", "--steps", "25", "--cfg-scale", "3"])
        let line = report.split(separator: "\n").first { $0.hasPrefix("eval-synthetic accuracy:") }
        let score = line.flatMap { Double($0.dropFirst("eval-synthetic accuracy:".count).split(separator: "%")[0]
            .trimmingCharacters(in: .whitespaces)) }
        XCTAssertNotNil(score, "no score in:\n\(report)")
        print("short demo (1000 steps): \(line ?? "no score")")
        XCTAssertGreaterThan(score ?? 0, 30, "accuracy \(score ?? 0)% is not far above chance (8.3%)")
    }
}

/// A shorter text-to-video run through the CLI (the random-weight BERT fixture as text encoder): train a tiny
/// Latte on the synthetic clips, write an mp4 for a prompt, score with eval-synthetic. After 300 steps the colour
/// follows the prompt (100% in the runs so far; chance 25%); shape and direction of motion need longer runs (see
/// BENCHMARKS.md), so only the colour is held to a bound here.
final class ShortVideoTrainingTests: XCTestCase {
    func testShortVideoRunFollowsTheColourAndWritesAClip() throws {
        let folder = Fixtures.temporaryDirectory("kinema-short-video")
        let checkpoint = folder.appendingPathComponent("checkpoint.safetensors").path
        _ = try KinemaCLI.run(["train", "--data", "synthetic-video", "--text-encoder", Fixtures.url("bert").path,
                               "--image-size", "16", "--num-frames", "8", "--patch-size", "4", "--steps", "300",
                               "--batch-size", "16", "--lr", "1e-3", "--log-every", "100", "--output", folder.path])
        let clip = folder.appendingPathComponent("clip.mp4").path
        _ = try KinemaCLI.run(["sample", "--checkpoint", checkpoint, "--prompt", "a blue circle moving up",
                               "--steps", "10", "--out", clip])
        XCTAssertEqual(try FFmpeg.decodeVideo(atPath: clip).count, 8)
        let report = try KinemaCLI.run(["eval-synthetic", "--checkpoint", checkpoint, "--per-class", "1",
                                        "--steps", "10"])
        print("short video run (300 steps): \(report)")
        let line = report.split(separator: "\n").first { $0.hasPrefix("colour accuracy") }
        let colour = line.flatMap { Double($0.dropFirst("colour accuracy".count).split(separator: "%")[0]
            .trimmingCharacters(in: .whitespaces)) }
        XCTAssertNotNil(colour, "no colour accuracy in:\n\(report)")
        XCTAssertGreaterThan(colour ?? 0, 80, "colour accuracy \(colour ?? 0)% is not far above chance (25%)")
        XCTAssertTrue(report.contains("eval-synthetic video accuracy:"), report)
    }
}

/// `kinema train --data videos.csv`: Open-Sora's CSV layout through the CLI; a broken video is reported by path.
final class VideoCSVTrainingTests: XCTestCase {
    func testTrainsOnACSVAndSkipsABrokenVideo() throws {
        let folder = Fixtures.temporaryDirectory("kinema-csv-train")
        let source = SyntheticVideos(frames: 6, imageSize: 16, count: 4, seed: 1)
        var lines = ["path,text"]
        for index in 0..<3 {
            try FFmpeg.writeVideo(source.video(at: index), fps: 8, toPath: folder.appendingPathComponent("\(index).mp4").path)
            lines.append("\(index).mp4,\(source.caption(at: index))")
        }
        try Data("garbage".utf8).write(to: folder.appendingPathComponent("broken.mp4"))
        lines.append("broken.mp4,\"a clip, that does not decode\"")
        let csv = folder.appendingPathComponent("videos.csv")
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: csv)
        var errors = ""
        _ = try KinemaCLI.run(["train", "--data", csv.path, "--text-encoder", Fixtures.url("bert").path,
                               "--image-size", "8", "--num-frames", "3", "--frame-interval", "2", "--patch-size", "4",
                               "--hidden-size", "32", "--depth", "1", "--num-heads", "2", "--steps", "4",
                               "--batch-size", "4", "--log-every", "2", "--output", folder.appendingPathComponent("run").path],
                              errors: &errors)
        XCTAssertTrue(errors.contains("skipping video \(folder.appendingPathComponent("broken.mp4").path)"), errors)
        XCTAssertTrue(errors.contains("on 4 clips of 8x8x3"), errors)
        let checkpoint = try SafetensorsFile(url: folder.appendingPathComponent("run/checkpoint.safetensors"))
        XCTAssertEqual(checkpoint.metadata["frames"], "3")
    }

    /// `--buckets`: videos of two sizes train in one run, each batch in its bucket's shape (a video DiT, whose
    /// positions follow any grid), the wide ones in batches of their own size.
    func testTrainsOnMixedSizesWithBuckets() throws {
        let folder = Fixtures.temporaryDirectory("kinema-bucket-train")
        let source = SyntheticVideos(frames: 4, imageSize: 16, count: 8, seed: 1)
        var lines = ["path,text"]
        for index in 0..<6 {
            let (width, height) = index % 2 == 0 ? (8, 8) : (16, 8)
            let frames = source.video(at: index).map { $0.resized(width: width, height: height) }
            try FFmpeg.writeVideo(frames, fps: 8, toPath: folder.appendingPathComponent("\(index).mp4").path)
            lines.append("\(index).mp4,\(source.caption(at: index))")
        }
        let csv = folder.appendingPathComponent("videos.csv")
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: csv)
        var errors = ""
        let log = try KinemaCLI.run(["train", "--data", csv.path, "--buckets", "8x8x4,8x16x4:2", "--video-model", "video-dit",
                                     "--temporal-patch", "2", "--text-encoder", Fixtures.url("bert").path,
                                     "--image-size", "8", "--patch-size", "4", "--hidden-size", "32", "--depth", "1",
                                     "--num-heads", "2", "--steps", "4", "--batch-size", "3", "--log-every", "1",
                                     "--output", folder.appendingPathComponent("run").path], errors: &errors)
        XCTAssertEqual(log.split(separator: "\n").filter { $0.contains("\"step\"") }.count, 4, log + errors)
    }
}

/// `kinema preprocess`: class folders (UCF101) and captioned videos to the CSV that training reads; unreadable or
/// uncaptioned videos are reported by path and left out.
final class PreprocessCommandTests: XCTestCase {
    /// `kinema preprocess --cache` on the synthetic clips with the VAE and BERT fixtures, then `kinema train --data`
    /// on the cache (no --vae, no --text-encoder) and `kinema sample`, which finds both models through the checkpoint.
    func testCachesLatentsAndTrainsFromThem() throws {
        let folder = Fixtures.temporaryDirectory("kinema-cache-cli")
        let cache = folder.appendingPathComponent("cache").path
        var errors = ""
        _ = try KinemaCLI.run(["preprocess", "--data", "synthetic-video", "--cache", cache, "--num-frames", "4",
                               "--image-size", "16", "--vae", Fixtures.url("vae").path, "--text-encoder",
                               Fixtures.url("bert").path, "--caption-length", "8", "--shard-size", "100"], errors: &errors)
        XCTAssertTrue(errors.contains("wrote 384 clips in 4 shard(s) (16x16x4)"), errors)
        _ = try KinemaCLI.run(["train", "--data", cache, "--video-model", "video-dit", "--patch-size", "1",
                               "--hidden-size", "16", "--depth", "1", "--num-heads", "2", "--steps", "2", "--batch-size", "4",
                               "--log-every", "1", "--output", folder.appendingPathComponent("run").path])
        let clip = folder.appendingPathComponent("clip.gif").path
        _ = try KinemaCLI.run(["sample", "--checkpoint", folder.appendingPathComponent("run/checkpoint.safetensors").path,
                               "--prompt", "a red square moving left", "--steps", "1", "--out", clip])
        XCTAssertEqual(try FFmpeg.decodeVideo(atPath: clip).count, 4)
    }

    func testIndexesClassFoldersAndCaptionedVideos() throws {
        let root = Fixtures.temporaryDirectory("kinema-preprocess")
        let source = SyntheticVideos(frames: 5, imageSize: 16, count: 4, seed: 3)
        let classes = root.appendingPathComponent("ucf")
        for (index, name) in ["ApplyEyeMakeup", "brush_hair"].enumerated() {
            let folder = classes.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try FFmpeg.writeVideo(source.video(at: index), fps: 10, toPath: folder.appendingPathComponent("v\(index).mp4").path)
        }
        let broken = classes.appendingPathComponent("brush_hair/broken.avi")
        try Data("junk".utf8).write(to: broken)
        let csv = classes.appendingPathComponent("index.csv")
        var errors = ""
        _ = try KinemaCLI.run(["preprocess", "--input", classes.path, "--output", csv.path], errors: &errors)
        XCTAssertTrue(errors.contains("skipping video \(broken.path)"), errors)
        let data = try VideoCSVDataset(csv: csv.path, frames: 4, imageSize: 8)
        XCTAssertEqual(data.rows.map(\.text), ["apply eye makeup", "brush hair"])
        XCTAssertEqual(data.rows.map(\.numFrames), [5, 5])
        XCTAssertEqual(data.rows[0].width, 16)
        XCTAssertEqual(data.rows[0].fps, 10)
        XCTAssertEqual(data.rows[0].path, classes.appendingPathComponent("ApplyEyeMakeup/v0.mp4").path)

        let captioned = root.appendingPathComponent("captioned")
        try FileManager.default.createDirectory(at: captioned, withIntermediateDirectories: true)
        for index in 0..<2 {
            try FFmpeg.writeVideo(source.video(at: index), fps: 8, toPath: captioned.appendingPathComponent("c\(index).mp4").path)
        }
        try Data("a clip, with \"quotes\"\n".utf8).write(to: captioned.appendingPathComponent("c0.txt"))
        let captionsCSV = root.appendingPathComponent("captions.csv")
        _ = try KinemaCLI.run(["preprocess", "--input", captioned.path, "--output", captionsCSV.path], errors: &errors)
        XCTAssertTrue(errors.contains("no caption in \(captioned.appendingPathComponent("c1.txt").path)"), errors)
        let rows = try VideoCSVDataset(csv: captionsCSV.path, frames: 2, imageSize: 8).rows
        XCTAssertEqual(rows.map(\.text), ["a clip, with \"quotes\""])
    }
}

/// `kinema forward` on the golden diffusers checkpoint reproduces the reference output.
final class ForwardCommandTests: XCTestCase {
    func testForwardOnDiffusersFolderMatchesReference() throws {
        let output = Fixtures.temporaryDirectory().appendingPathComponent("out.safetensors")
        _ = try KinemaCLI.run(["forward", "--checkpoint", Fixtures.url("dit_diffusers").path,
                               "--inputs", Fixtures.url("dit_diffusers_io.safetensors").path, "--output", output.path])
        let ours = try SafetensorsFile(url: output).floats("out")
        let reference = try SafetensorsFile(url: Fixtures.url("dit_diffusers_io.safetensors")).floats("out")
        XCTAssertLessThan(relativeError(ours, reference), 1e-4)
    }

    /// PixArt and Latte folders take x, t, encoder_hidden_states and encoder_attention_mask (diffusers' names).
    func testForwardOnTextConditionedModelsMatchesReference() throws {
        let backend = CPUBackend()
        for (model, mask) in [("pixart", true), ("latte", false)] {
            let io = try SafetensorsFile(url: Fixtures.url("\(model)_io.safetensors"))
            let directory = Fixtures.temporaryDirectory()
            let inputs = directory.appendingPathComponent("inputs.safetensors")
            let output = directory.appendingPathComponent("out.safetensors")
            var tensors = [(name: "x", tensor: try io.tensor("wide_x", on: backend)),
                           (name: "t", tensor: try io.tensor("wide_t", on: backend)),
                           (name: "encoder_hidden_states", tensor: try io.tensor("wide_captions", on: backend))]
            if mask { tensors.append((name: "encoder_attention_mask", tensor: try io.tensor("wide_mask", on: backend))) }
            try SafetensorsWriter.write(tensors, to: inputs, backend: backend)
            _ = try KinemaCLI.run(["forward", "--checkpoint", Fixtures.url(model).path, "--inputs", inputs.path,
                                   "--output", output.path])
            let ours = try SafetensorsFile(url: output).floats("out")
            XCTAssertLessThan(relativeError(ours, try io.floats("wide_out")), 1e-4, model)
        }
    }
}

/// A diffusers AutoencoderKL folder takes image and latent and writes latent_mean, latent_logvar and decoded.
final class VAEForwardTests: XCTestCase {
    func testForwardOnAutoencoderFolderMatchesDiffusers() throws {
        let backend = CPUBackend()
        let io = try SafetensorsFile(url: Fixtures.url("vae_io.safetensors"))
        let directory = Fixtures.temporaryDirectory()
        let inputs = directory.appendingPathComponent("inputs.safetensors")
        let output = directory.appendingPathComponent("out.safetensors")
        try SafetensorsWriter.write([(name: "image", tensor: try io.tensor("wide_image", on: backend)),
                                     (name: "latent", tensor: try io.tensor("wide_latent", on: backend))],
                                    to: inputs, backend: backend)
        _ = try KinemaCLI.run(["forward", "--checkpoint", Fixtures.url("vae").path, "--inputs", inputs.path,
                               "--output", output.path])
        let ours = try SafetensorsFile(url: output)
        for (name, reference) in [("latent_mean", "wide_latent_mean"), ("latent_logvar", "wide_latent_logvar"),
                                  ("decoded", "wide_decoded")] {
            XCTAssertLessThan(relativeError(try ours.floats(name), try io.floats(reference)), 1e-4, name)
        }
    }
}

/// A transformers text encoder folder (BERT, T5, CLIP) takes input_ids and attention_mask and writes
/// last_hidden_state, and pooler_output where the model has one.
final class TextEncoderForwardTests: XCTestCase {
    func testForwardOnTextEncoderFoldersMatchesTransformers() throws {
        for (folder, outputs) in [("bert", ["last_hidden_state", "pooler_output"]), ("t5", ["last_hidden_state"]),
                                  ("clip", ["last_hidden_state", "pooler_output"])] {
            let output = Fixtures.temporaryDirectory().appendingPathComponent("out.safetensors")
            let io = Fixtures.url("\(folder)_io.safetensors")
            _ = try KinemaCLI.run(["forward", "--checkpoint", Fixtures.url(folder).path, "--inputs", io.path,
                                   "--output", output.path])
            let ours = try SafetensorsFile(url: output), reference = try SafetensorsFile(url: io)
            XCTAssertEqual(ours.contains("pooler_output"), outputs.contains("pooler_output"), folder)
            for name in outputs {
                XCTAssertLessThan(relativeError(try ours.floats(name), try reference.floats(name)), 1e-4, "\(folder) \(name)")
            }
        }
    }

    /// Every text encoder conditions every video model (a Latte with T5, an STDiT with CLIP and with BERT under IDDPM,
    /// a video DiT with 2×4×4 patches with each of its conditionings): two steps each, then a sampled clip; the IDDPM
    /// STDiT also continues a given first frame (`--image`) by ancestral sampling (`--sampler ddpm`).
    func testTrainsAndSamplesEveryVideoModelWithEachTextEncoder() throws {
        for (encoder, architecture, options) in [("t5", "latte", []), ("clip", "stdit", []),
                                                 ("t5", "video-dit", ["--conditioning", "adaln-zero"]),
                                                 ("clip", "video-dit", ["--conditioning", "cross-attention"]),
                                                 ("bert", "video-dit", ["--conditioning", "in-context"]),
                                                 ("bert", "stdit", ["--diffusion", "iddpm"])] {
            let folder = Fixtures.temporaryDirectory("kinema-\(encoder)-video")
            _ = try KinemaCLI.run(["train", "--data", "synthetic-video", "--video-model", architecture] + options + [
                                   "--text-encoder", Fixtures.url(encoder).path,
                                   "--image-size", "16", "--num-frames", "4", "--patch-size", "4", "--steps", "2",
                                   "--batch-size", "4", "--caption-length", "12", "--log-every", "1",
                                   "--output", folder.path])
            let clip = folder.appendingPathComponent("clip.gif").path
            _ = try KinemaCLI.run(["sample", "--checkpoint", folder.appendingPathComponent("checkpoint.safetensors").path,
                                   "--prompt", "a red square moving left", "--steps", "2", "--out", clip])
            let run = "\(encoder) \(architecture) \(options)"
            XCTAssertEqual(try FFmpeg.decodeVideo(atPath: clip).count, 4, run)
            if options.contains("iddpm") {
                let image = folder.appendingPathComponent("first.png").path
                try FFmpeg.writeImage(SyntheticVideos(frames: 4, imageSize: 16, count: 2).video(at: 0)[0], toPath: image)
                let continued = folder.appendingPathComponent("continued.gif").path
                _ = try KinemaCLI.run(["sample", "--checkpoint", folder.appendingPathComponent("checkpoint.safetensors").path,
                                       "--prompt", "a red square moving left", "--image", image, "--steps", "2",
                                       "--sampler", "ddpm", "--out", continued])
                XCTAssertEqual(try FFmpeg.decodeVideo(atPath: continued).count, 4, "\(run) with --image")
            }
        }
    }
}

/// Training on an image folder through the CLI: a corrupt file is reported with its path and skipped.
final class ImageFolderTrainingTests: XCTestCase {
    func testTrainsOnFolderAndSkipsUnreadableImage() throws {
        let root = Fixtures.temporaryDirectory("kinema-folder")
        let shapes = SyntheticShapes(imageSize: 12, count: 8)
        for (index, name) in ["apples", "pears"].enumerated() {
            let folder = root.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for i in 0..<3 {
                try FFmpeg.writeImage(shapes.image(at: index * 3 + i), toPath: folder.appendingPathComponent("\(i).png").path)
            }
        }
        let corrupt = root.appendingPathComponent("pears/broken.png")
        try Data("not an image".utf8).write(to: corrupt)
        let output = Fixtures.temporaryDirectory()
        var errors = ""
        _ = try KinemaCLI.run(["train", "--data", root.path, "--image-size", "8", "--hidden-size", "32", "--depth", "1",
                               "--num-heads", "2", "--steps", "3", "--batch-size", "4", "--log-every", "1",
                               "--output", output.path], errors: &errors)
        XCTAssertTrue(errors.contains(corrupt.path), "the unreadable image is not reported:\n\(errors)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: output.appendingPathComponent("checkpoint.safetensors").path))
    }
}

/// `kinema forward` on the state dicts of Open-Sora's STDiT and OpenDiT's vDiT: the config read off the tensors'
/// shapes, the output as the reference's (the fixtures of scripts/make_golden_stdit.py and make_golden_vdit.py, their
/// weights saved as the references name them).
final class VideoStateDictForwardTests: XCTestCase {
    /// Writes the fixture's `weights.` tensors as the reference's own state dict file (the prefix dropped) and its
    /// `inputs` (forward's name, the fixture's tensor) as the inputs file, runs `kinema forward` with `options`, and
    /// checks `out` against the fixture's.
    func assertForwardMatches(fixture: String, inputs: [(name: String, tensor: (SafetensorsFile) throws -> Tensor)],
                              options: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let backend = CPUBackend()
        let io = try SafetensorsFile(url: Fixtures.url("\(fixture)_io.safetensors"))
        let directory = Fixtures.temporaryDirectory("kinema-\(fixture)-forward")
        let weights = directory.appendingPathComponent("\(fixture).safetensors")
        try SafetensorsWriter.write(try io.names.filter { $0.hasPrefix("weights.") }.map {
            (name: String($0.dropFirst("weights.".count)), tensor: try io.tensor($0, on: backend))
        }, to: weights, backend: backend)
        let inputsURL = directory.appendingPathComponent("inputs.safetensors")
        try SafetensorsWriter.write(try inputs.map { (name: $0.name, tensor: try $0.tensor(io)) }, to: inputsURL,
                                    backend: backend)
        let output = directory.appendingPathComponent("out.safetensors")
        _ = try KinemaCLI.run(["forward", "--checkpoint", weights.path, "--inputs", inputsURL.path,
                               "--output", output.path] + options)
        let error = relativeError(try SafetensorsFile(url: output).floats("out"), try io.floats("out"))
        XCTAssertLessThan(error, 1e-4, "kinema forward on the \(fixture) state dict differs from the reference by \(error)",
                          file: file, line: line)
    }

    func testForwardOnOpenSoraStateDictMatchesOpenSora() throws {
        let backend = CPUBackend()
        let fixtureTensor = { (name: String) in { (io: SafetensorsFile) in try io.tensor(name, on: backend) } }
        try assertForwardMatches(fixture: "stdit", inputs: [("x", fixtureTensor("x")), ("t", fixtureTensor("t")),
                                                            ("encoder_hidden_states", fixtureTensor("y")),
                                                            ("encoder_attention_mask", fixtureTensor("mask"))],
                                 options: ["--num-heads", "4", "--space-scale", "0.5", "--time-scale", "2"])
    }

    /// OpenDiT's vDiT takes a pooled caption [B, C]: given to forward as a one-token caption [B, 1, C].
    func testForwardOnOpenDiTVideoStateDictMatchesOpenDiT() throws {
        let backend = CPUBackend()
        let fixtureTensor = { (name: String) in { (io: SafetensorsFile) in try io.tensor(name, on: backend) } }
        let oneToken = { (io: SafetensorsFile) in
            let pooled = try io.tensor("y", on: backend)
            return pooled.reshaped([pooled.shape[0], 1, pooled.shape[1]])
        }
        try assertForwardMatches(fixture: "vdit", inputs: [("x", fixtureTensor("x")), ("t", fixtureTensor("t")),
                                                           ("encoder_hidden_states", oneToken)],
                                 options: ["--num-heads", "4"])
    }
}
