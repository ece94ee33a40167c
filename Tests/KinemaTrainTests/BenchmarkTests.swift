import KinemaCPU
import KinemaModels
import KinemaTensor
import KinemaTrain
import XCTest

/// `kinema bench` on the CPU: the counting (what CI can check; GPU numbers come from scripts/gpu-check).
final class BenchmarkTests: XCTestCase {
    let backend = CPUBackend()

    func makeModel() throws -> DiT {
        let config = DiTConfig(inputSize: 4, patchSize: 2, inChannels: 4, hiddenSize: 32, depth: 1, numHeads: 2,
                               numClasses: 10)
        return try DiT(config: config, backend: backend, seed: 3)
    }

    func testMeasureSecondsCoversTheWork() {
        let seconds = backend.measureSeconds { usleep(20_000) }
        XCTAssertGreaterThanOrEqual(seconds, 0.019)
        XCTAssertLessThan(seconds, 2)
    }

    func testTrainCountsThreeForwardsPerImage() throws {
        let model = try makeModel()
        let device = BenchmarkDevice(peakTeraflops: 1)
        let result = Benchmark.train(model: model, name: "test", batchSize: 3, steps: 3, warmup: 1, device: device)
        XCTAssertEqual(result.mode, "train")
        XCTAssertGreaterThan(result.medianStepSeconds, 0)
        XCTAssertEqual(result.imagesPerSecond, 3 / result.medianStepSeconds, accuracy: 1e-9)
        XCTAssertEqual(result.tokensPerSecond, result.imagesPerSecond * 4, accuracy: 1e-6)
        XCTAssertEqual(result.teraflopsPerSecond, 3 * model.config.forwardFLOPs * result.imagesPerSecond / 1e12,
                       accuracy: 1e-12)
        XCTAssertEqual(result.mfu, result.teraflopsPerSecond)
        XCTAssertNil(result.peakMemoryBytes)
        XCTAssertNil(result.deviceAllocationsDuringTimedSteps)
    }

    /// A sample "step" is a whole guided sampler run: samplingSteps forwards of the doubled batch per image.
    func testSampleTimesWholeGuidedRuns() throws {
        let model = try makeModel()
        let allocations = 5
        let device = BenchmarkDevice(peakTeraflops: 2, peakMemory: { 1234 }, deviceAllocations: { allocations })
        let result = try Benchmark.sample(model: model, name: "test", batchSize: 2, samplingSteps: 4, cfgScale: 4,
                                          steps: 2, warmup: 1, device: device)
        XCTAssertEqual(result.samplingSteps, 4)
        XCTAssertEqual(result.teraflopsPerSecond, 4 * 2 * model.config.forwardFLOPs * result.imagesPerSecond / 1e12,
                       accuracy: 1e-12)
        XCTAssertEqual(result.mfu, result.teraflopsPerSecond / 2, accuracy: 1e-15)
        XCTAssertEqual(result.peakMemoryBytes, 1234)
        XCTAssertEqual(result.deviceAllocationsWarm, 5)
        XCTAssertEqual(result.deviceAllocationsDuringTimedSteps, 0)
    }

    /// A Latte step counts a video as one sample of frames · grid² tokens, with the temporal blocks in its FLOPs.
    func testTrainLatteCountsVideoTokens() throws {
        let config = PixArtConfig(sampleSize: 4, patchSize: 2, inChannels: 4, outChannels: 8, hiddenSize: 32,
                                  depth: 1, numHeads: 2, captionChannels: 16)
        let model = try Latte(config: config, videoLength: 3, backend: backend, seed: 5)
        let result = Benchmark.trainLatte(model: model, name: "tiny", batchSize: 2, frames: 3, latentSize: 4,
                                          captionLength: 5, steps: 2, warmup: 1,
                                          device: BenchmarkDevice(peakTeraflops: 1))
        XCTAssertEqual(result.tokensPerSample, 3 * 2 * 2)
        XCTAssertEqual(result.tokensPerSecond, 2 * 12 / result.medianStepSeconds, accuracy: 1e-6)
        let spatialOnly = config.forwardFLOPs(frames: 3, gridHeight: 2, gridWidth: 2, captionLength: 5,
                                              temporal: false)
        let withTemporal = config.forwardFLOPs(frames: 3, gridHeight: 2, gridWidth: 2, captionLength: 5,
                                               temporal: true)
        XCTAssertGreaterThan(withTemporal, spatialOnly)
        XCTAssertEqual(result.teraflopsPerSecond, 3 * withTemporal * 2 / result.medianStepSeconds / 1e12,
                       accuracy: 1e-12)
        XCTAssertTrue(backend.download(model.arena.weights).allSatisfy { $0.isFinite })
    }

    /// The count scripts/pytorch_latte_reference.py uses for diffusers' Latte (same formula, written twice on
    /// purpose: the two sides of the benchmark must agree on the work).
    func testLatteXLCountMatchesThePyTorchReference() throws {
        let config = try PixArtConfig.latte("Latte-XL/2")
        let flops = config.forwardFLOPs(frames: 16, gridHeight: 16, gridWidth: 16, captionLength: 120, temporal: true)
        XCTAssertEqual(flops / 1e9, 8141.475446784, accuracy: 1e-6)
    }
}
