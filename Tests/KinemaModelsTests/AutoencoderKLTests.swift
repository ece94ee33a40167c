import Foundation
import KinemaCPU
import KinemaModels
import KinemaNN
import KinemaTensor
import KinemaTestSupport
import XCTest

/// The SD-VAE against diffusers' AutoencoderKL (scripts/make_golden_video.py: random weights, square and
/// non-square images), and its convolution against a direct sum.
final class AutoencoderKLTests: XCTestCase {
    let backend = CPUBackend()

    func testEncodeAndDecodeMatchDiffusers() throws {
        let vae = try AutoencoderKLCheckpoint.load(folder: Fixtures.url("vae").path, backend: backend)
        XCTAssertEqual(vae.config.blockOutChannels, [32, 64])
        XCTAssertEqual(vae.config.downsampling, 2)
        XCTAssertEqual(vae.config.scalingFactor, 0.18215)
        let io = try SafetensorsFile(url: Fixtures.url("vae_io.safetensors"))
        for label in ["square", "wide"] {
            let (mean, logVariance) = vae.encode(try io.tensor("\(label)_image", on: backend))
            XCTAssertLessThan(relativeError(backend.download(mean), try io.floats("\(label)_latent_mean")), 1e-4, label)
            XCTAssertLessThan(relativeError(backend.download(logVariance), try io.floats("\(label)_latent_logvar")), 1e-4,
                              label)
            let decoded = vae.decode(try io.tensor("\(label)_latent", on: backend))
            XCTAssertEqual(decoded.shape, try io.info("\(label)_decoded").shape)
            XCTAssertLessThan(relativeError(backend.download(decoded), try io.floats("\(label)_decoded")), 1e-4, label)
            // Frame by frame in groups gives the same latents as one call.
            let grouped = vae.encodeFrames(try io.tensor("\(label)_image", on: backend), framesPerCall: 1)
            XCTAssertLessThan(relativeError(backend.download(grouped), backend.download(mean)), 1e-6, label)
        }
    }

    /// Tiled decoding (diffusers' enable_tiling) of latents larger than a tile: overlapping tiles blended as diffusers
    /// blends them; untiled decoding of the same latents differs (the tiles do not see each other).
    func testTiledDecodeMatchesDiffusers() throws {
        let vae = try AutoencoderKLCheckpoint.load(folder: Fixtures.url("vae").path, backend: backend)
        let io = try SafetensorsFile(url: Fixtures.url("vae_io.safetensors"))
        let latent = try io.tensor("tiled_latent", on: backend)
        vae.tiling = true
        let tiled = vae.decode(latent)
        XCTAssertEqual(tiled.shape, [1, 3, 24, 40])
        XCTAssertLessThan(relativeError(backend.download(tiled), try io.floats("tiled_decoded")), 1e-4)
        vae.tiling = false
        XCTAssertGreaterThan(relativeError(backend.download(vae.decode(latent)), try io.floats("tiled_decoded")), 1e-3)
    }

    /// Conv2d with uneven padding and a stride against the definition, in f64.
    func testConvolutionMatchesTheDefinition() {
        let conv = Conv2d(backend: backend, name: "c", inChannels: 3, outChannels: 2, kernelSize: 3, stride: 2,
                          padding: (0, 1, 1, 0), dtype: .f64, seed: 3)
        backend.copy(randomTensor([2], seed: 9, backend: backend), into: conv.bias!.value)
        let x = randomTensor([2, 3, 5, 6], seed: 4, backend: backend)
        let y = backend.downloadDouble(conv.forward(x))
        let xs = backend.downloadDouble(x), w = backend.downloadDouble(conv.weight.value)
        let b = backend.downloadDouble(conv.bias!.value)
        let (oh, ow) = ((5 + 0 + 1 - 3) / 2 + 1, (6 + 1 + 0 - 3) / 2 + 1)
        var want: [Double] = []
        for n in 0..<2 {
            for o in 0..<2 {
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        var sum = b[o]
                        for c in 0..<3 {
                            for ky in 0..<3 {
                                for kx in 0..<3 {
                                    let iy = oy * 2 + ky, ix = ox * 2 + kx - 1
                                    guard iy >= 0 && iy < 5 && ix >= 0 && ix < 6 else { continue }
                                    sum += w[((o * 3 + c) * 3 + ky) * 3 + kx] * xs[((n * 3 + c) * 5 + iy) * 6 + ix]
                                }
                            }
                        }
                        want.append(sum)
                    }
                }
            }
        }
        XCTAssertEqual(y.count, want.count)
        for (a, e) in zip(y, want) { XCTAssertEqual(a, e, accuracy: 1e-12) }
    }
}
