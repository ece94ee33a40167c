import Foundation
import KinemaCPU
import KinemaDiffusion
import KinemaModels
import KinemaTensor
import KinemaTestSupport
import XCTest

/// Kinema's DiT against outputs of the reference implementations (scripts/make_golden.py): the original DiT
/// (facebookresearch/DiT models.py) and diffusers' DiTTransformer2DModel, both with random weights.
final class DiTGoldenTests: XCTestCase {
    let backend = CPUBackend()

    func testOriginalLayoutMatchesReferenceForward() throws {
        let model = try DiTCheckpoint.load(path: Fixtures.url("dit_original_weights.safetensors").path, backend: backend)
        XCTAssertEqual(model.config.hiddenSize, 64)
        XCTAssertEqual(model.config.depth, 2)
        XCTAssertEqual(model.config.outChannels, 8)
        let io = try SafetensorsFile(url: Fixtures.url("dit_original_io.safetensors"))
        let out = model(try io.tensor("x", on: backend), timesteps: try io.tensor("t", on: backend),
                        labels: try io.tensor("y", on: backend, as: .i32))
        let error = relativeError(backend.download(out), try io.floats("out"))
        XCTAssertLessThan(error, 1e-4, "forward differs from the original DiT by \(error)")
    }

    func testGuidedForwardMatchesForwardWithCFG() throws {
        let model = try DiTCheckpoint.load(path: Fixtures.url("dit_original_weights.safetensors").path, backend: backend)
        let io = try SafetensorsFile(url: Fixtures.url("dit_original_io.safetensors"))
        let scale = Double(io.metadata["cfg_scale"] ?? "") ?? 4
        let output = model(try io.tensor("cfg_x", on: backend), timesteps: try io.tensor("cfg_t", on: backend),
                           labels: try io.tensor("cfg_y", on: backend, as: .i32))
        // DiT's forward_with_cfg guides the first three channels only.
        let guided = ClassifierFreeGuidance.combine(output, scale: scale, guidedChannels: 3, backend: backend)
        let error = relativeError(backend.download(guided), try io.floats("cfg_out"))
        XCTAssertLessThan(error, 1e-4, "guided forward differs from forward_with_cfg by \(error)")
    }

    func testDiffusersFolderMatchesReferenceForward() throws {
        let model = try DiTCheckpoint.load(path: Fixtures.url("dit_diffusers").path, backend: backend)
        XCTAssertEqual(model.config.timestepFrequencyShift, 1)
        XCTAssertEqual(model.config.mlpNormEps, 1e-5)
        let io = try SafetensorsFile(url: Fixtures.url("dit_diffusers_io.safetensors"))
        let out = model(try io.tensor("x", on: backend), timesteps: try io.tensor("t", on: backend),
                        labels: try io.tensor("y", on: backend, as: .i32))
        let error = relativeError(backend.download(out), try io.floats("out"))
        XCTAssertLessThan(error, 1e-4, "forward differs from diffusers by \(error)")
    }

    func testStateDictRoundTripAndPositionalTable() throws {
        let path = Fixtures.url("dit_original_weights.safetensors")
        let model = try DiTCheckpoint.load(path: path.path, backend: backend)
        // The sin-cos table we compute equals the one the reference stored.
        let reference = try SafetensorsFile(url: path)
        let ours = model.stateDict().first { $0.name == "pos_embed" }!.tensor
        XCTAssertLessThan(relativeError(backend.download(ours), try reference.floats("pos_embed")), 1e-6)
        // Saved and reloaded, the model computes the same thing.
        let folder = Fixtures.temporaryDirectory()
        let saved = folder.appendingPathComponent("model.safetensors")
        try SafetensorsWriter.write(model.stateDict(), metadata: ["config": model.config.json], to: saved, backend: backend)
        let reloaded = try DiTCheckpoint.load(path: saved.path, backend: backend)
        let x = backend.randomNormal([2, 4, 8, 8], dtype: .f32, seed: 3, offset: 0)
        let t = backend.upload([5.0, 999.0] as [Float], shape: [2], dtype: .f32)
        let y = backend.upload([1, 10] as [Int32], shape: [2])
        XCTAssertEqual(backend.download(model(x, timesteps: t, labels: y)),
                       backend.download(reloaded(x, timesteps: t, labels: y)))
        // Without the config metadata, the config is read off the shapes (hidden 64 is no paper size: heads needed).
        let bare = folder.appendingPathComponent("bare.safetensors")
        try SafetensorsWriter.write(model.stateDict(), to: bare, backend: backend)
        XCTAssertThrowsError(try DiTCheckpoint.load(path: bare.path, backend: backend)) { error in
            XCTAssertTrue("\(error)".contains("--num-heads"), "\(error)")
        }
        let inferred = try DiTCheckpoint.load(path: bare.path, backend: backend, numHeads: 4)
        XCTAssertEqual(inferred.config.inputSize, 8)
        XCTAssertEqual(inferred.config.numClasses, 10)
        XCTAssertTrue(inferred.config.learnSigma)
    }

    func testMissingAndMisshapenTensorsAreNamed() throws {
        let model = try DiTCheckpoint.load(path: Fixtures.url("dit_original_weights.safetensors").path, backend: backend)
        let folder = Fixtures.temporaryDirectory()
        let missing = folder.appendingPathComponent("missing.safetensors")
        try SafetensorsWriter.write(model.stateDict().filter { $0.name != "blocks.1.mlp.fc2.bias" },
                                    metadata: ["config": model.config.json], to: missing, backend: backend)
        XCTAssertThrowsError(try DiTCheckpoint.load(path: missing.path, backend: backend)) { error in
            XCTAssertTrue("\(error)".contains("blocks.1.mlp.fc2.bias") && "\(error)".contains("missing"), "\(error)")
        }
        var wrong = model.config
        wrong.hiddenSize = 32
        XCTAssertThrowsError(try DiTCheckpoint.load(path: missing.path + ".nothing", backend: backend)) { error in
            XCTAssertTrue("\(error)".contains("no such file"), "\(error)")
        }
        let misshapen = folder.appendingPathComponent("misshapen.safetensors")
        try SafetensorsWriter.write(model.stateDict(), metadata: ["config": wrong.json], to: misshapen, backend: backend)
        XCTAssertThrowsError(try DiTCheckpoint.load(path: misshapen.path, backend: backend)) { error in
            XCTAssertTrue("\(error)".contains("x_embedder.proj.weight") && "\(error)".contains("shape"), "\(error)")
        }
    }
}
