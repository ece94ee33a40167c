import Foundation
import KinemaCPU
import KinemaModels
import KinemaTensor
import KinemaTestSupport
import XCTest

/// Latte against diffusers' LatteTransformer3DModel (scripts/make_golden_video.py: random weights, 3 frames, the
/// training size and a non-square one), and its hand-written backward against finite differences in f64.
final class LatteTests: XCTestCase {
    let backend = CPUBackend()

    func testDiffusersFolderMatchesReferenceForward() throws {
        let model = try LatteCheckpoint.load(folder: Fixtures.url("latte").path, backend: backend)
        XCTAssertEqual(model.videoLength, 3)
        XCTAssertEqual(model.config.depth, 2)
        let reference = try SafetensorsFile(url: Fixtures.url("latte/diffusion_pytorch_model.safetensors"))
        XCTAssertEqual(Set(model.parameters.map(\.name)), Set(reference.names))
        let io = try SafetensorsFile(url: Fixtures.url("latte_io.safetensors"))
        for label in ["square", "wide"] {
            let (out, _) = model.forward(try io.tensor("\(label)_x", on: backend),
                                         timesteps: try io.tensor("\(label)_t", on: backend),
                                         captions: try io.tensor("\(label)_captions", on: backend), captionMask: nil)
            XCTAssertEqual(out.shape, try io.info("\(label)_out").shape)
            let error = relativeError(backend.download(out), try io.floats("\(label)_out"))
            XCTAssertLessThan(error, 1e-4, "\(label): forward differs from diffusers by \(error)")
        }
    }

    func testWholeTinyLatteGradients() throws {
        let config = PixArtConfig(sampleSize: 4, patchSize: 2, inChannels: 2, outChannels: 4, hiddenSize: 8, depth: 2,
                                  numHeads: 2, captionChannels: 6, mlpHidden: 12)
        let model = try Latte(config: config, videoLength: 3, backend: backend, dtype: .f64)
        for (index, parameter) in model.parameters.enumerated() {
            backend.copy(randomTensor(parameter.value.shape, seed: UInt64(500 + index), backend: backend, scale: 0.4),
                         into: parameter.value)
        }
        // 3 frames of 2 × 4 latents (2 patches a frame), captions with padding in the first video.
        let x = randomTensor([2, 2, 3, 2, 4], seed: 1, backend: backend)
        let t = backend.upload([3.0, 611.0], shape: [2], dtype: .f64)
        let captions = randomTensor([2, 3, 6], seed: 2, backend: backend)
        let mask = backend.upload([1, 1, 0, 1, 1, 1] as [Int32], shape: [2, 3])
        let weights = randomTensor([2, 4, 3, 2, 4], seed: 3, backend: backend)
        model.zeroGradients()
        let (out, cache) = model.forward(x, timesteps: t, captions: captions, captionMask: mask)
        XCTAssertEqual(out.shape, [2, 4, 3, 2, 4])
        model.backward(weights, cache)
        for bias in model.parameters where bias.name.hasSuffix("to_k.bias") {
            XCTAssertLessThan(backend.downloadDouble(bias.gradient).map(abs).max()!, 1e-10, bias.name)
        }
        // 1e-5: the cross-attention's q and k gradients are ~1e-3 of the others here (three caption tokens, nearly
        // uniform attention); the central differences' absolute error, ~1e-8 here, is up to ~3e-6 of them.
        checkGradients(model.parameters.filter { !$0.name.hasSuffix("to_k.bias") }.map { ($0.name, $0.value, $0.gradient) },
                       backend: backend, relativeTolerance: 1e-5) {
            weightedSum(model.forward(x, timesteps: t, captions: captions, captionMask: mask).0, weights,
                        backend: backend)
        }
    }
}
