import KinemaCPU
import KinemaNN
import KinemaTensor
import KinemaTestSupport
import XCTest

/// Finite-difference checks (f64) of every layer's input and parameter gradients, with random parameters
/// (default initialisations leave biases at zero, which would hide a wrong bias path).
final class LayerGradientTests: XCTestCase {
    let cpu = CPUBackend(threads: 2)

    func random(_ shape: [Int], _ seed: UInt64, scale: Double = 1) -> Tensor {
        randomTensor(shape, seed: seed, backend: cpu, scale: scale)
    }

    /// Gives every parameter random values (scaled down for wide layers) and zero gradients.
    func randomize(_ layer: Layer, seed: UInt64, scale: Double = 0.5) {
        for (i, parameter) in layer.parameters.enumerated() {
            parameter.value = random(parameter.value.shape, seed &+ UInt64(i), scale: scale)
            parameter.zeroGradient(backend: cpu)
        }
    }

    func parameterChecks(_ layer: Layer) -> [(name: String, tensor: Tensor, analytic: Tensor)] {
        layer.parameters.map { ($0.name, $0.value, $0.gradient) }
    }

    func testLinear() {
        for bias in [true, false] {
            let linear = Linear(backend: cpu, name: "fc", inFeatures: 7, outFeatures: 3, bias: bias, dtype: .f64)
            randomize(linear, seed: 100)
            let x = random([2, 5, 7], 1), r = random([2, 5, 3], 2)
            let y = linear.forward(x)
            XCTAssertEqual(y.shape, [2, 5, 3])
            let dx = linear.backward(r, input: x)
            checkGradients([("linear x", x, dx)] + parameterChecks(linear), backend: cpu) {
                weightedSum(linear.forward(x), r, backend: cpu)
            }
        }
    }

    func testLinearAccumulatesParameterGradients() {
        let linear = Linear(backend: cpu, name: "fc", inFeatures: 4, outFeatures: 3, dtype: .f64)
        randomize(linear, seed: 110)
        let x = random([6, 4], 3), r = random([6, 3], 4)
        _ = linear.backward(r, input: x)
        let once = linear.parameters.map { cpu.downloadDouble($0.gradient) }
        _ = linear.backward(r, input: x)
        for (parameter, first) in zip(linear.parameters, once) {
            assertClose(cpu.downloadDouble(parameter.gradient), first.map { 2 * $0 }, relativeTolerance: 1e-14,
                        parameter.name)
        }
    }

    func testLayerNorm() {
        for affine in [false, true] {
            let norm = LayerNorm(backend: cpu, name: "norm", dim: 7, affine: affine, eps: 1e-6, dtype: .f64)
            XCTAssertEqual(norm.parameters.map(\.name), affine ? ["norm.weight", "norm.bias"] : [])
            randomize(norm, seed: 120)
            let x = random([2, 5, 7], 5, scale: 2), r = random([2, 5, 7], 6)
            let (_, cache) = norm.forward(x)
            let dx = norm.backward(r, cache)
            checkGradients([("layerNorm x", x, dx)] + parameterChecks(norm), backend: cpu) {
                weightedSum(norm.forward(x).0, r, backend: cpu)
            }
        }
    }

    func testRMSNorm() {
        let norm = RMSNorm(backend: cpu, name: "layer_norm", dim: 7, eps: 1e-6, dtype: .f64)
        XCTAssertEqual(norm.parameters.map(\.name), ["layer_norm.weight"])
        randomize(norm, seed: 121)
        let x = random([2, 5, 7], 7, scale: 2), r = random([2, 5, 7], 8)
        let dx = norm.backward(r, norm.forward(x).1)
        checkGradients([("rmsNorm x", x, dx)] + parameterChecks(norm), backend: cpu) {
            weightedSum(norm.forward(x).0, r, backend: cpu)
        }
    }

    func testMLP() {
        let mlp = MLP(backend: cpu, name: "mlp", dim: 6, hiddenDim: 10, dtype: .f64)
        XCTAssertEqual(mlp.parameters.map(\.name), ["mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"])
        randomize(mlp, seed: 130)
        let x = random([2, 5, 6], 7, scale: 2), r = random([2, 5, 6], 8)
        let (_, cache) = mlp.forward(x)
        let dx = mlp.backward(r, cache)
        checkGradients([("mlp x", x, dx)] + parameterChecks(mlp), backend: cpu) {
            weightedSum(mlp.forward(x).0, r, backend: cpu)
        }
    }

    func testSelfAttention() {
        let attention = SelfAttention(backend: cpu, name: "blocks.0.attn", dim: 8, heads: 2, dtype: .f64)
        XCTAssertEqual(attention.parameters.map(\.name), ["blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias",
                                                          "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias"])
        XCTAssertEqual(attention.qkv.weight.value.shape, [24, 8])
        randomize(attention, seed: 140)
        let x = random([2, 5, 8], 9), r = random([2, 5, 8], 10)
        let (y, cache) = attention.forward(x)
        XCTAssertEqual(y.shape, [2, 5, 8])
        let dx = attention.backward(r, cache)
        checkGradients([("selfAttention x", x, dx)] + parameterChecks(attention), backend: cpu) {
            weightedSum(attention.forward(x).0, r, backend: cpu)
        }
    }

    /// Moves a layer with packed runs into an arena (f64) and writes random values through its views.
    func arranged(_ layer: Layer, seed: UInt64) -> ParameterArena {
        let arena = ParameterArena(parameters: layer.parameters, computeDType: .f64, backend: cpu,
                                   packedRuns: layer.packedRuns)
        for (i, parameter) in layer.parameters.enumerated() {
            cpu.copy(random(parameter.value.shape, seed &+ UInt64(i), scale: 0.5), into: parameter.value)
        }
        return arena
    }

    /// Every parameter but to_k's bias, whose gradient is zero in exact arithmetic (it adds q·b to every score of
    /// a query, which the softmax cancels): asserted zero to rounding instead.
    func checkedParameters(_ attention: MultiHeadAttention) -> [(name: String, tensor: Tensor, analytic: Tensor)] {
        let keyBias = attention.toK.bias!
        XCTAssertLessThan(cpu.downloadDouble(keyBias.gradient).map(abs).max()!, 1e-12, "to_k.bias gradient")
        return parameterChecks(attention).filter { $0.name != keyBias.name }
    }

    func testMultiHeadSelfAttention() {
        let attention = MultiHeadAttention(backend: cpu, name: "transformer_blocks.0.attn1", dim: 8, heads: 2,
                                           bias: true, dtype: .f64)
        XCTAssertEqual(attention.parameters.map(\.name).map { $0.replacingOccurrences(of: "transformer_blocks.0.attn1.", with: "") },
                       ["to_q.weight", "to_k.weight", "to_v.weight", "to_q.bias", "to_k.bias", "to_v.bias",
                        "to_out.0.weight", "to_out.0.bias"])
        XCTAssertEqual(attention.packedRuns, [0..<3, 3..<6])
        _ = arranged(attention, seed: 150)
        let x = random([2, 5, 8], 9), r = random([2, 5, 8], 10)
        let (y, cache) = attention.forward(x)
        XCTAssertEqual(y.shape, [2, 5, 8])
        let (dx, dContext) = attention.backward(r, cache)
        XCTAssertNil(dContext)
        checkGradients([("attn1 x", x, dx)] + checkedParameters(attention), backend: cpu) {
            weightedSum(attention.forward(x).0, r, backend: cpu)
        }
    }

    func testMultiHeadCrossAttentionWithKeyMask() {
        let attention = MultiHeadAttention(backend: cpu, name: "attn2", dim: 8, heads: 2, contextDim: 6, bias: true,
                                           dtype: .f64)
        XCTAssertEqual(attention.parameters.map(\.name),
                       ["attn2.to_q.weight", "attn2.to_q.bias", "attn2.to_k.weight", "attn2.to_v.weight",
                        "attn2.to_k.bias", "attn2.to_v.bias", "attn2.to_out.0.weight", "attn2.to_out.0.bias"])
        XCTAssertEqual(attention.packedRuns, [2..<4, 4..<6])
        _ = arranged(attention, seed: 160)
        // Sample 0 attends to 3 of its 4 context tokens, sample 1 to all.
        let x = random([2, 5, 8], 11), context = random([2, 4, 6], 12), r = random([2, 5, 8], 13)
        let mask = cpu.upload([1, 1, 1, 0, 1, 1, 1, 1] as [Int32], shape: [2, 4])
        let (y, cache) = attention.forward(x, context: context, keyMask: mask)
        let (dx, dContext) = attention.backward(r, cache)
        XCTAssertEqual(dContext?.shape, [2, 4, 6])
        // A padded token neither changes the output nor receives gradient.
        XCTAssertEqual(cpu.downloadDouble(dContext!)[18..<24].map(abs).max(), 0)
        checkGradients([("attn2 x", x, dx), ("attn2 context", context, dContext!)] + checkedParameters(attention),
                       backend: cpu) {
            weightedSum(attention.forward(x, context: context, keyMask: mask).0, r, backend: cpu)
        }
        XCTAssertEqual(y.shape, [2, 5, 8])
    }

    func testPatchEmbed() {
        let embed = PatchEmbed(backend: cpu, name: "x_embedder", patchSize: 2, inChannels: 3, dim: 5, dtype: .f64)
        XCTAssertEqual(embed.parameters.map(\.name), ["x_embedder.proj.weight", "x_embedder.proj.bias"])
        XCTAssertEqual(embed.parameters[0].value.shape, [5, 3, 2, 2])
        randomize(embed, seed: 150)
        let images = random([2, 3, 4, 6], 11), r = random([2, 6, 5], 12)
        let (_, cache) = embed.forward(images)
        embed.backward(r, cache)
        checkGradients(parameterChecks(embed), backend: cpu) {
            weightedSum(embed.forward(images).0, r, backend: cpu)
        }
    }

    func testTimestepEmbedder() {
        let embedder = TimestepEmbedder(backend: cpu, name: "t_embedder", dim: 6, frequencyDim: 9, dtype: .f64)
        XCTAssertEqual(embedder.parameters.map(\.name), ["t_embedder.mlp.0.weight", "t_embedder.mlp.0.bias",
                                                         "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias"])
        randomize(embedder, seed: 160)
        let t = cpu.upload([3.0, 517.0, 999.0], shape: [3], dtype: .f64), r = random([3, 6], 13)
        let (y, cache) = embedder.forward(t)
        XCTAssertEqual(y.shape, [3, 6])
        embedder.backward(r, cache)
        checkGradients(parameterChecks(embedder), backend: cpu) {
            weightedSum(embedder.forward(t).0, r, backend: cpu)
        }
    }

    func testLabelEmbedder() {
        let embedder = LabelEmbedder(backend: cpu, name: "y_embedder", numClasses: 5, dim: 4, dropoutProbability: 0.1,
                                     dtype: .f64)
        XCTAssertEqual(embedder.table.name, "y_embedder.embedding_table.weight")
        XCTAssertEqual(embedder.table.value.shape, [6, 4])  // the null class is row 5
        randomize(embedder, seed: 170)
        let labels = cpu.upload([Int32]([2, 5, 2, 0]), shape: [4]), r = random([4, 4], 14)
        embedder.backward(r, labels: labels)
        checkGradients(parameterChecks(embedder), backend: cpu) {
            weightedSum(embedder.forward(labels), r, backend: cpu)
        }
    }
}
