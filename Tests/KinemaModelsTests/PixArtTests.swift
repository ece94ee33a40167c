import Foundation
import KinemaCPU
import KinemaModels
import KinemaTensor
import KinemaTestSupport
import XCTest

/// PixArt against diffusers' PixArtTransformer2DModel (scripts/make_golden_video.py: random weights, a caption mask,
/// the training size and a non-square one), and its hand-written backward against finite differences in f64.
final class PixArtTests: XCTestCase {
    let backend = CPUBackend()

    func testDiffusersFolderMatchesReferenceForward() throws {
        let model = try PixArtCheckpoint.load(folder: Fixtures.url("pixart").path, backend: backend)
        XCTAssertEqual(model.config, PixArtConfig(sampleSize: 8, patchSize: 2, inChannels: 4, outChannels: 8,
                                                  hiddenSize: 16, depth: 2, numHeads: 2, captionChannels: 12))
        let io = try SafetensorsFile(url: Fixtures.url("pixart_io.safetensors"))
        for label in ["square", "wide"] {
            let (out, _) = model.forward(try io.tensor("\(label)_x", on: backend),
                                         timesteps: try io.tensor("\(label)_t", on: backend),
                                         captions: try io.tensor("\(label)_captions", on: backend),
                                         captionMask: try io.tensor("\(label)_mask", on: backend, as: .i32))
            XCTAssertEqual(out.shape, io.names.contains("\(label)_out") ? try io.info("\(label)_out").shape : [])
            let error = relativeError(backend.download(out), try io.floats("\(label)_out"))
            XCTAssertLessThan(error, 1e-4, "\(label): forward differs from diffusers by \(error)")
        }
    }

    func testParameterNamesAreDiffusers() throws {
        let model = try PixArt(config: PixArtConfig(sampleSize: 8, hiddenSize: 16, depth: 1, numHeads: 2,
                                                    captionChannels: 12), backend: backend)
        let file = try SafetensorsFile(url: Fixtures.url("pixart/diffusion_pytorch_model.safetensors"))
        let reference = Set(file.names.filter { !$0.hasPrefix("transformer_blocks.1.") })
        XCTAssertEqual(Set(model.parameters.map(\.name)), reference)
    }

    func testWholeTinyPixArtGradients() throws {
        let config = PixArtConfig(sampleSize: 4, patchSize: 2, inChannels: 2, outChannels: 4, hiddenSize: 16, depth: 2,
                                  numHeads: 2, captionChannels: 6, mlpHidden: 24)
        let model = try PixArt(config: config, backend: backend, dtype: .f64)
        for (index, parameter) in model.parameters.enumerated() {
            backend.copy(randomTensor(parameter.value.shape, seed: UInt64(300 + index), backend: backend, scale: 0.4),
                         into: parameter.value)
        }
        // A 4 × 6 latent (not the training size) and a caption whose last token is padding.
        let x = randomTensor([2, 2, 4, 6], seed: 1, backend: backend)
        let t = backend.upload([3.0, 611.0], shape: [2], dtype: .f64)
        let captions = randomTensor([2, 3, 6], seed: 2, backend: backend)
        let mask = backend.upload([1, 1, 0, 1, 1, 1] as [Int32], shape: [2, 3])
        let weights = randomTensor([2, 4, 4, 6], seed: 3, backend: backend)
        model.zeroGradients()
        let (out, cache) = model.forward(x, timesteps: t, captions: captions, captionMask: mask)
        XCTAssertEqual(out.shape, [2, 4, 4, 6])
        model.backward(weights, cache)
        // to_k's bias has zero gradient in exact arithmetic (the softmax cancels it): checked to be ~0 instead.
        let keyBiases = model.parameters.filter { $0.name.hasSuffix("to_k.bias") }
        for bias in keyBiases {
            XCTAssertLessThan(backend.downloadDouble(bias.gradient).map(abs).max()!, 1e-10, bias.name)
        }
        checkGradients(model.parameters.filter { !$0.name.hasSuffix("to_k.bias") }.map { ($0.name, $0.value, $0.gradient) },
                       backend: backend, relativeTolerance: 1e-6) {
            weightedSum(model.forward(x, timesteps: t, captions: captions, captionMask: mask).0, weights,
                        backend: backend)
        }
    }
}
