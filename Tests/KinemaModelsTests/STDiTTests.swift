import Foundation
import KinemaCPU
import KinemaModels
import KinemaNN
import KinemaTensor
import KinemaTestSupport
import XCTest

/// STDiT against Open-Sora 1.0's own STDiT (scripts/make_golden_stdit.py: random weights in Open-Sora's layout, a
/// masked caption, space and time scales), and its gradients by finite differences.
final class STDiTTests: XCTestCase {
    let backend = CPUBackend()
    static let config = PixArtConfig(sampleSize: 8, patchSize: 2, inChannels: 4, outChannels: 8, hiddenSize: 32, depth: 2,
                                     numHeads: 4, captionChannels: 24, interpolationScale: 0.5)

    func testForwardMatchesOpenSora() throws {
        let path = Fixtures.url("stdit_io.safetensors").path
        let model = try STDiTCheckpoint.load(path, prefix: "weights.", config: Self.config, timeScale: 2, backend: backend)
        let io = try SafetensorsFile(url: Fixtures.url("stdit_io.safetensors"))
        XCTAssertEqual(model.nullCaption?.shape, [7, 24])
        let (out, _) = model.forward(try io.tensor("x", on: backend), timesteps: try io.tensor("t", on: backend),
                                     captions: try io.tensor("y", on: backend),
                                     captionMask: try io.tensor("mask", on: backend))
        XCTAssertEqual(out.shape, [2, 8, 3, 8, 8])
        let error = relativeError(backend.download(out), try io.floats("out"))
        XCTAssertLessThan(error, 1e-4, "STDiT differs from Open-Sora by \(error)")
    }

    /// Every parameter's gradient of a tiny STDiT in f64 (3 frames of 2 × 4 patches, a padded caption) against
    /// finite differences of Σ out ⊙ R.
    func testWholeTinySTDiTGradients() throws {
        let config = PixArtConfig(sampleSize: 4, patchSize: 2, inChannels: 2, outChannels: 3, hiddenSize: 8, depth: 2,
                                  numHeads: 2, captionChannels: 5, mlpHidden: 12)
        let model = try STDiT(config: config, timeScale: 1.5, backend: backend, dtype: .f64)
        for (index, parameter) in model.parameters.enumerated() {  // nonzero everywhere, the zero-started ones too
            backend.copy(randomTensor(parameter.value.shape, seed: UInt64(500 + index), backend: backend, scale: 0.4),
                         into: parameter.value)
        }
        let x = randomTensor([2, 2, 3, 4, 8], seed: 1, backend: backend)
        let t = backend.upload([3.0, 700.0], shape: [2], dtype: .f64)
        let captions = randomTensor([2, 4, 5], seed: 2, backend: backend)
        let mask = backend.upload([1, 1, 1, 1, 1, 1, 0, 0] as [Int32], shape: [2, 4])
        let weights = randomTensor([2, 3, 3, 4, 8], seed: 3, backend: backend)
        model.zeroGradients()
        let (out, cache) = model.forward(x, timesteps: t, captions: captions, captionMask: mask)
        XCTAssertEqual(out.shape, [2, 3, 3, 4, 8])
        model.backward(weights, cache)
        // A key bias shifts every score of a query alike: its gradient is zero in exact arithmetic.
        let keyBias = { (name: String) in name.hasSuffix(".k.bias") || name.hasSuffix("k_linear.bias") }
        for bias in model.parameters where keyBias(bias.name) {
            XCTAssertLessThan(backend.downloadDouble(bias.gradient).map(abs).max()!, 1e-10, bias.name)
        }
        checkGradients(model.parameters.filter { !keyBias($0.name) }.map { ($0.name, $0.value, $0.gradient) },
                       backend: backend, relativeTolerance: 1e-5) {
            weightedSum(model.forward(x, timesteps: t, captions: captions, captionMask: mask).0, weights,
                        backend: backend)
        }
    }
}
