import Foundation
import KinemaCPU
import KinemaModels
import KinemaNN
import KinemaTensor
import KinemaTestSupport
import XCTest

/// The video DiT against OpenDiT's own vDiT (scripts/make_golden_vdit.py: 2×2×2 patches, adaLN-zero on a pooled
/// caption), and whole-model gradients for each of the three conditionings.
final class VideoDiTTests: XCTestCase {
    let backend = CPUBackend()

    func testAdaLNZeroForwardMatchesOpenDiT() throws {
        let io = try SafetensorsFile(url: Fixtures.url("vdit_io.safetensors"))
        let config = VideoDiTConfig(patchSize: 2, temporalPatch: 2, inChannels: 4, outChannels: 8, hiddenSize: 32,
                                    depth: 2, numHeads: 4, captionChannels: 24, conditioning: .adaLNZero)
        let model = try VideoDiT(config: config, backend: backend)
        try model.loadParameters(from: "vdit_io.safetensors") { name in
            io.contains("weights." + name) ? try io.tensor("weights." + name, on: backend) : nil
        }
        let pooled = try io.tensor("y", on: backend)
        let (out, _) = model.forward(try io.tensor("x", on: backend), timesteps: try io.tensor("t", on: backend),
                                     captions: pooled.reshaped([2, 1, 24]), captionMask: nil)
        XCTAssertEqual(out.shape, [2, 8, 4, 8, 8])
        let error = relativeError(backend.download(out), try io.floats("out"))
        XCTAssertLessThan(error, 1e-4, "the video DiT differs from OpenDiT by \(error)")
    }

    func testNamedConfigs() throws {
        let config = try VideoDiTConfig.named("vDiT-XL/222")
        XCTAssertEqual([config.hiddenSize, config.depth, config.numHeads, config.temporalPatch, config.patchSize],
                       [1152, 28, 16, 2, 2])
        XCTAssertEqual(try VideoDiTConfig.named("vDiT-S/122").temporalPatch, 1)
        XCTAssertThrowsError(try VideoDiTConfig.named("vDiT-XL/2"))
    }

    /// Every parameter's gradient of a tiny f64 video DiT, each conditioning, a padded caption, against finite
    /// differences of Σ out ⊙ R.
    func testWholeTinyVideoDiTGradients() throws {
        for conditioning in VideoDiTConfig.Conditioning.allCases {
            let config = VideoDiTConfig(patchSize: 2, temporalPatch: 2, inChannels: 2, outChannels: 3, hiddenSize: 8,
                                        depth: 2, numHeads: 2, mlpRatio: 1.5, captionChannels: 5, conditioning: conditioning)
            let model = try VideoDiT(config: config, backend: backend, dtype: .f64)
            for (index, parameter) in model.parameters.enumerated() {
                backend.copy(randomTensor(parameter.value.shape, seed: UInt64(700 + index), backend: backend, scale: 0.4),
                             into: parameter.value)
            }
            let x = randomTensor([2, 2, 4, 2, 4], seed: 1, backend: backend)
            let t = backend.upload([3.0, 700.0], shape: [2], dtype: .f64)
            let captions = randomTensor([2, 3, 5], seed: 2, backend: backend)
            let mask = backend.upload([1, 1, 1, 1, 1, 0] as [Int32], shape: [2, 3])
            let weights = randomTensor([2, 3, 4, 2, 4], seed: 3, backend: backend)
            model.zeroGradients()
            let (out, cache) = model.forward(x, timesteps: t, captions: captions, captionMask: mask)
            XCTAssertEqual(out.shape, [2, 3, 4, 2, 4])
            model.backward(weights, cache)
            let keyBias = { (name: String) in name.hasSuffix("to_k.bias") }
            checkGradients(model.parameters.filter { !keyBias($0.name) }.map { ("\(conditioning) \($0.name)", $0.value,
                                                                                $0.gradient) },
                           backend: backend, relativeTolerance: 1e-5) {
                weightedSum(model.forward(x, timesteps: t, captions: captions, captionMask: mask).0, weights,
                            backend: backend)
            }
        }
    }
}
