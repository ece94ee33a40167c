import KinemaCPU
import KinemaNN
import KinemaTensor
import KinemaTestSupport
import XCTest

/// Layout conventions (patch order, unpatchify, the 2D sin-cos table) and the host-side random helpers.
final class PatchesAndEmbeddingTests: XCTestCase {
    let cpu = CPUBackend(threads: 2)

    func testPatchEmbedIsAStridedConvolution() {
        let (batch, channels, p, dim, height, width) = (2, 3, 2, 5, 4, 6)
        let embed = PatchEmbed(backend: cpu, name: "x_embedder", patchSize: p, inChannels: channels, dim: dim, dtype: .f64)
        embed.bias.value = randomTensor([dim], seed: 1, backend: cpu)
        let images = randomTensor([batch, channels, height, width], seed: 2, backend: cpu)
        let (y, _) = embed.forward(images)
        let (gridH, gridW) = (height / p, width / p)
        XCTAssertEqual(y.shape, [batch, gridH * gridW, dim])
        let w = cpu.downloadDouble(embed.weight.value), b = cpu.downloadDouble(embed.bias.value)
        let x = cpu.downloadDouble(images)
        var expected = [Double]()
        for n in 0..<batch {
            for h in 0..<gridH {
                for gw in 0..<gridW {
                    for d in 0..<dim {
                        var total = b[d]
                        for c in 0..<channels {
                            for i in 0..<p {
                                for j in 0..<p {
                                    total += w[((d * channels + c) * p + i) * p + j]
                                        * x[((n * channels + c) * height + h * p + i) * width + gw * p + j]
                                }
                            }
                        }
                        expected.append(total)
                    }
                }
            }
        }
        assertClose(cpu.downloadDouble(y), expected, relativeTolerance: 1e-13)
    }

    func testUnpatchifyLayoutAndAdjoint() {
        let (batch, channels, p, gridH, gridW) = (2, 3, 2, 2, 3)
        let tokens = randomTensor([batch, gridH * gridW, p * p * channels], seed: 3, backend: cpu)
        let images = Patches.unpatchify(tokens, channels: channels, patchSize: p, gridHeight: gridH, gridWidth: gridW,
                                        backend: cpu)
        XCTAssertEqual(images.shape, [batch, channels, gridH * p, gridW * p])
        // images[n, c, h·p + i, w·p + j] = tokens[n, h·gridW + w, (i·p + j)·C + c]
        let t = cpu.downloadDouble(tokens), im = cpu.downloadDouble(images)
        let (height, width) = (gridH * p, gridW * p)
        for n in 0..<batch {
            for c in 0..<channels {
                for y in 0..<height {
                    for x in 0..<width {
                        let token = (y / p) * gridW + x / p, lane = ((y % p) * p + x % p) * channels + c
                        XCTAssertEqual(im[((n * channels + c) * height + y) * width + x],
                                       t[(n * gridH * gridW + token) * p * p * channels + lane])
                    }
                }
            }
        }
        // ⟨unpatchify(a), b⟩ = ⟨a, unpatchifyBackward(b)⟩
        let probe = randomTensor(images.shape, seed: 4, backend: cpu)
        let back = Patches.unpatchifyBackward(probe, patchSize: p, backend: cpu)
        XCTAssertEqual(back.shape, tokens.shape)
        let lhs = weightedSum(images, probe, backend: cpu), rhs = weightedSum(tokens, back, backend: cpu)
        XCTAssertEqual(lhs, rhs, accuracy: 1e-12 * abs(lhs))
    }

    func testSinCos2DMatchesMAEForATwoByThreeGrid() {
        let (s1, s001, c1, c001) = (0.8414709848078965, 0.009999833334166664, 0.5403023058681398, 0.9999500004166653)
        let (s2, s002, c2, c002) = (0.9092974268256817, 0.01999866669333308, -0.4161468365471424, 0.9998000066665778)
        // Rows over (h, w); channels [sin(w), sin(w/100), cos(w), cos(w/100), sin(h), sin(h/100), cos(h), cos(h/100)].
        let expected: [[Double]] = [
            [0, 0, 1, 1, 0, 0, 1, 1],
            [s1, s001, c1, c001, 0, 0, 1, 1],
            [s2, s002, c2, c002, 0, 0, 1, 1],
            [0, 0, 1, 1, s1, s001, c1, c001],
            [s1, s001, c1, c001, s1, s001, c1, c001],
            [s2, s002, c2, c002, s1, s001, c1, c001],
        ]
        let table = PositionalEmbedding.sinCos2D(dim: 8, gridHeight: 2, gridWidth: 3)
        assertClose(table, expected.flatMap { $0 }, relativeTolerance: 1e-15)
    }

    func testDropLabelsIsDeterministicAndDropsAboutP() {
        let embedder = LabelEmbedder(backend: cpu, name: "y_embedder", numClasses: 10, dim: 2, dropoutProbability: 0.1,
                                     dtype: .f32)
        let labels = (0..<20_000).map { Int32($0 % 10) }
        var first = RandomStream(seed: 42), second = RandomStream(seed: 42)
        let dropped = embedder.dropLabels(labels, random: &first)
        XCTAssertEqual(dropped, embedder.dropLabels(labels, random: &second))
        XCTAssertEqual(first, second)
        let fraction = Double(dropped.filter { $0 == 10 }.count) / Double(labels.count)
        XCTAssertEqual(fraction, 0.1, accuracy: 0.01)  // binomial σ ≈ 0.002
        XCTAssert(zip(labels, dropped).allSatisfy { $1 == $0 || $1 == 10 }, "kept labels must be unchanged")

        let plain = LabelEmbedder(backend: cpu, name: "y", numClasses: 10, dim: 2, dropoutProbability: 0, dtype: .f32)
        XCTAssertEqual(plain.table.value.shape, [10, 2])
        var untouched = RandomStream(seed: 1)
        XCTAssertEqual(plain.dropLabels(labels, random: &untouched), labels)
        XCTAssertEqual(untouched.position, 0)
    }

    func testInitializersAreDeterministicWithTheRightStatistics() {
        let uniform = Initializers.xavierUniform(shape: [64, 100], fanIn: 100, fanOut: 64, seed: 3, stream: 9)
        XCTAssertEqual(uniform, Initializers.xavierUniform(shape: [64, 100], fanIn: 100, fanOut: 64, seed: 3, stream: 9))
        XCTAssertNotEqual(uniform, Initializers.xavierUniform(shape: [64, 100], fanIn: 100, fanOut: 64, seed: 3, stream: 10))
        let bound = (6.0 / 164).squareRoot()
        XCTAssert(uniform.allSatisfy { abs($0) < bound })
        XCTAssertEqual(uniform.map { $0 * $0 }.reduce(0, +) / Double(uniform.count), bound * bound / 3,
                       accuracy: 0.05 * bound * bound / 3)

        let normal = Initializers.normal(count: 20_000, std: 0.02, seed: 3, stream: 9)
        let mean = normal.reduce(0, +) / Double(normal.count)
        let std = (normal.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(normal.count)).squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 0.001)
        XCTAssertEqual(std, 0.02, accuracy: 0.0005)
    }

    func testParametersStartZeroGradientAndZeroAgain() {
        let linear = Linear(backend: cpu, name: "fc", inFeatures: 3, outFeatures: 2, dtype: .f32)
        XCTAssertEqual(cpu.download(linear.bias!.value), [0, 0])
        XCTAssertEqual(cpu.download(linear.weight.gradient), [Float](repeating: 0, count: 6))
        _ = linear.backward(cpu.upload([Float]([1, 2]), shape: [1, 2], dtype: .f32),
                            input: cpu.upload([Float]([1, 1, 1]), shape: [1, 3], dtype: .f32))
        XCTAssertEqual(cpu.download(linear.bias!.gradient), [1, 2])
        linear.parameters.forEach { $0.zeroGradient(backend: cpu) }
        XCTAssertEqual(cpu.download(linear.bias!.gradient), [0, 0])
        // Default values are a function of the parameter name only.
        let again = Linear(backend: cpu, name: "fc", inFeatures: 3, outFeatures: 2, dtype: .f32)
        XCTAssertEqual(cpu.download(again.weight.value), cpu.download(linear.weight.value))
    }
}
