import Foundation
import KinemaCPU
import KinemaData
import KinemaModels
import KinemaTensor
import KinemaTestSupport
import KinemaTrain
import XCTest

final class ResumeTests: XCTestCase {
    let backend = CPUBackend()

    func makeTrainer(steps: Int) throws -> Trainer {
        let config = DiTConfig(inputSize: 8, patchSize: 2, inChannels: 3, hiddenSize: 32, depth: 2, numHeads: 2,
                               numClasses: SyntheticShapes.classCount)
        let model = try DiT(config: config, backend: backend, seed: 7)
        let options = TrainingOptions(batchSize: 6, steps: steps, learningRate: 1e-3, warmupSteps: 2, maxGradNorm: 0.5,
                                      emaDecay: 0.9, seed: 11, checkpointEvery: 0, logEvery: 1)
        return try Trainer(model: model, data: SyntheticShapes(imageSize: 8, count: 40, seed: 5), options: options)
    }

    func snapshot(_ trainer: Trainer) -> [[Float]] {
        trainer.model.parameters.map { backend.download($0.value) } + trainer.ema.shadows.map { backend.download($0) }
            + trainer.optimizer.stateDict().map { backend.download($0.tensor) }
    }

    /// N steps straight equal N/2 steps, a checkpoint, a fresh process state resumed from it, and N/2 more — bit for
    /// bit, weights, EMA and optimizer moments alike (the 40-sample data set also crosses an epoch boundary).
    func testResumeIsBitExact() throws {
        let straight = try makeTrainer(steps: 10)
        for _ in 0..<10 { _ = straight.trainStep() }

        let first = try makeTrainer(steps: 10)
        for _ in 0..<5 { _ = first.trainStep() }
        let checkpoint = Fixtures.temporaryDirectory().appendingPathComponent("checkpoint.safetensors")
        try first.saveCheckpoint(to: checkpoint)

        let second = try makeTrainer(steps: 10)
        try second.resume(from: checkpoint)
        XCTAssertEqual(second.step, 5)
        for _ in 0..<5 { _ = second.trainStep() }
        XCTAssertEqual(second.step, 10)
        XCTAssertEqual(snapshot(second), snapshot(straight))
    }

    func testTrainingCheckpointLoadsForSamplingWithEMA() throws {
        let trainer = try makeTrainer(steps: 3)
        let folder = Fixtures.temporaryDirectory()
        let checkpoint = folder.appendingPathComponent("checkpoint.safetensors")
        try trainer.run(checkpoint: checkpoint, log: try TrainingLog(jsonLinesFile: folder.appendingPathComponent("log.jsonl"),
                                                                     drawProgress: false))
        let lines = try String(contentsOf: folder.appendingPathComponent("log.jsonl"), encoding: .utf8)
            .split(separator: "\n")
        XCTAssertEqual(lines.count, 3)
        let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any]
        for key in ["step", "loss", "gradNorm", "lr", "imagesPerSecond"] { XCTAssertNotNil(first[key], key) }
        let ema = try DiTCheckpoint.load(path: checkpoint.path, backend: backend)
        let raw = try DiTCheckpoint.load(path: checkpoint.path, backend: backend, preferEMA: false)
        let name = "blocks.0.attn.qkv.weight"
        func values(_ model: DiT) -> [Float] { backend.download(model.parameters.first { $0.name == name }!.value) }
        XCTAssertEqual(values(raw), backend.download(trainer.model.parameters.first { $0.name == name }!.value))
        XCTAssertEqual(values(ema), backend.download(trainer.ema.shadows[trainer.model.parameters.firstIndex { $0.name == name }!]))
        XCTAssertNotEqual(values(ema), values(raw))
    }

    func testResumeRefusesAnotherModelsCheckpoint() throws {
        let trainer = try makeTrainer(steps: 1)
        let checkpoint = Fixtures.temporaryDirectory().appendingPathComponent("checkpoint.safetensors")
        try trainer.saveCheckpoint(to: checkpoint)
        let config = DiTConfig(inputSize: 8, patchSize: 2, inChannels: 3, hiddenSize: 16, depth: 2, numHeads: 2,
                               numClasses: SyntheticShapes.classCount)
        let other = try Trainer(model: try DiT(config: config, backend: backend),
                                data: SyntheticShapes(imageSize: 8, count: 40), options: TrainingOptions(batchSize: 4))
        XCTAssertThrowsError(try other.resume(from: checkpoint)) { XCTAssertTrue("\($0)".contains("differs"), "\($0)") }
    }
}
