import Foundation
import KinemaCPU
import KinemaModels
import KinemaNN
import KinemaTensor
import KinemaTestSupport
import KinemaTrain
import XCTest

/// AdamW, the EMA and the gradient norm as one pass over a DiT's parameter arena: the same numbers as the
/// per-parameter math, an exact f32 master under bf16 compute, and checkpoints that keep it.
final class OptimizerArenaTests: XCTestCase {
    let backend = CPUBackend()
    let config = DiTConfig(inputSize: 8, patchSize: 2, inChannels: 3, hiddenSize: 32, depth: 2, numHeads: 2,
                           numClasses: 5)
    let h = AdamWHyperparameters(learningRate: 3e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.05)

    /// Deterministic pseudo-gradients for step `step`, written through each parameter's gradient view (a backward
    /// writes only there, so the padding stays zero).
    func setGradients(_ model: DiT, step: Int) {
        model.zeroGradients()
        for (index, parameter) in model.parameters.enumerated() {
            let values = randomTensor(parameter.value.shape, dtype: .f32, seed: UInt64(1000 * step + index),
                                      backend: backend, scale: 0.05)
            backend.copy(values, into: parameter.gradient)
        }
    }

    /// The old per-parameter update, written out in Float exactly as the CPU op computes it.
    func referenceAdamW(p: inout [Float], g: [Float], m: inout [Float], v: inout [Float], step: Int, lr: Double,
                        gradScale: Double) {
        let beta1 = Float(h.beta1), beta2 = Float(h.beta2), scale = Float(gradScale), eps = Float(h.epsilon)
        let decay = Float(1 - lr * h.weightDecay)
        let stepSize = Float(lr) / Float(1 - pow(h.beta1, Double(step)))
        let sqrtCorrection2 = Float((1 - pow(h.beta2, Double(step))).squareRoot())
        for i in p.indices {
            let grad = g[i] * scale
            m[i] = beta1 * m[i] + (1 - beta1) * grad
            v[i] = beta2 * v[i] + (1 - beta2) * grad * grad
            p[i] = p[i] * decay - stepSize * m[i] / (v[i].squareRoot() / sqrtCorrection2 + eps)
        }
    }

    func testArenaAdamWEqualsPerParameterMath() throws {
        let model = try DiT(config: config, backend: backend, seed: 1)
        let optimizer = AdamW(arena: model.arena, hyperparameters: h)
        var p = model.parameters.map { backend.download($0.value) }
        var m = p.map { [Float](repeating: 0, count: $0.count) }, v = m
        for step in 1...3 {
            setGradients(model, step: step)
            let g = model.parameters.map { backend.download($0.gradient) }
            let (norm, scale) = clipGradientNorm(model.arena, maxNorm: 0.5)
            let expectedNorm = g.flatMap { $0 }.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            XCTAssertEqual(norm, expectedNorm, accuracy: 1e-12 * expectedNorm)
            for i in p.indices {
                referenceAdamW(p: &p[i], g: g[i], m: &m[i], v: &v[i], step: step, lr: 1e-3 * Double(step),
                               gradScale: scale)
            }
            optimizer.update(learningRate: 1e-3 * Double(step), gradScale: scale)
        }
        XCTAssertEqual(model.parameters.map { backend.download($0.value) }, p)
        let state = optimizer.stateDict()
        XCTAssertEqual(state.count, 2 * model.parameters.count)
        XCTAssertEqual(state.enumerated().filter { $0.offset % 2 == 0 }.map { backend.download($0.element.tensor) }, m)
        XCTAssertEqual(state.enumerated().filter { $0.offset % 2 == 1 }.map { backend.download($0.element.tensor) }, v)
    }

    /// Under bf16 compute the master follows exactly the f32 model's weights (the update never reads the copy),
    /// and the compute copy is the master rounded to nearest even after every step.
    func testBF16MasterStaysExactAndCopyIsRounded() throws {
        let f32 = try DiT(config: config, backend: backend, seed: 2)
        let bf16 = try DiT(config: config, backend: backend, dtype: .bf16, seed: 2)
        XCTAssertEqual(backend.download(bf16.arena.master!), backend.download(f32.arena.values))
        XCTAssertEqual(bf16.parameters.map { backend.download($0.gradient) }.count, f32.parameters.count)
        XCTAssertTrue(bf16.parameters.allSatisfy { $0.value.dtype == .bf16 && $0.gradient.dtype == .f32 })
        let a = AdamW(arena: f32.arena, hyperparameters: h), b = AdamW(arena: bf16.arena, hyperparameters: h)
        let emaA = ExponentialMovingAverage(arena: f32.arena, decay: 0.9)
        let emaB = ExponentialMovingAverage(arena: bf16.arena, decay: 0.9)
        XCTAssertEqual(emaB.average.dtype, .f32)
        for step in 1...4 {
            setGradients(f32, step: step)
            setGradients(bf16, step: step)
            XCTAssertEqual(backend.download(f32.arena.gradients), backend.download(bf16.arena.gradients))
            a.update(learningRate: 1e-3)
            b.update(learningRate: 1e-3)
            emaA.update(step: step)
            emaB.update(step: step)
            XCTAssertEqual(backend.download(bf16.arena.master!), backend.download(f32.arena.values), "step \(step)")
            XCTAssertEqual(backend.download(bf16.arena.values),
                           backend.download(backend.cast(bf16.arena.master!, to: .bf16)), "step \(step)")
        }
        XCTAssertEqual(backend.download(emaB.average), backend.download(emaA.average))
        XCTAssertNotEqual(backend.download(bf16.arena.values), backend.download(bf16.arena.master!))
        // The stateDict exports the master, so a bf16 model's weights save exactly.
        XCTAssertEqual(bf16.stateDict().dropLast().map { backend.download($0.tensor) },
                       f32.stateDict().dropLast().map { backend.download($0.tensor) })
    }

    func testComputeCopyInEveryDtype() {
        let count = 1000
        for dtype in [DType.bf16, .f16, .f32] {
            let p = randomTensor([count], dtype: .f32, seed: 1, backend: backend)
            let g = randomTensor([count], dtype: .f32, seed: 2, backend: backend)
            let m = backend.zeros([count], dtype: .f32), v = backend.zeros([count], dtype: .f32)
            let copy = backend.zeros([count], dtype: dtype)
            let reference = backend.clone(p), rm = backend.clone(m), rv = backend.clone(v)
            backend.adamW(master: p, gradient: g, m: m, v: v, computeCopy: copy, step: 1, hyperparameters: h,
                          gradScale: 0.5)
            backend.adamW(master: reference, gradient: g, m: rm, v: rv, computeCopy: nil, step: 1, hyperparameters: h,
                          gradScale: 0.5)
            XCTAssertEqual(backend.download(p), backend.download(reference), "the copy does not change the update")
            XCTAssertEqual(backend.download(copy), backend.download(backend.cast(p, to: dtype)), "\(dtype)")
        }
    }

    /// AdamW with the EMA fused in equals AdamW, then emaUpdate, bit for bit.
    func testFusedEMAEqualsSeparatePasses() {
        let count = 1001
        for dtype in [DType.f32, .f64] {
            func state(_ seed: UInt64) -> Tensor { randomTensor([count], dtype: dtype, seed: seed, backend: backend) }
            let (p, g, m, e) = (state(1), state(2), state(3), state(4))
            let v = backend.mul(state(5), state(5))
            let (rp, rg, rm, rv, re) = (backend.clone(p), backend.clone(g), backend.clone(m), backend.clone(v), backend.clone(e))
            backend.adamW(master: p, gradient: g, m: m, v: v, computeCopy: nil, step: 3, hyperparameters: h,
                          gradScale: 0.7, ema: (e, 0.95))
            backend.adamW(master: rp, gradient: rg, m: rm, v: rv, computeCopy: nil, step: 3, hyperparameters: h,
                          gradScale: 0.7)
            backend.emaUpdate(re, toward: rp, decay: 0.95)
            XCTAssertEqual(backend.downloadDouble(p), backend.downloadDouble(rp), "\(dtype)")
            XCTAssertEqual(backend.downloadDouble(e), backend.downloadDouble(re), "\(dtype)")
            XCTAssertEqual(backend.downloadDouble(m), backend.downloadDouble(rm), "\(dtype)")
            XCTAssertEqual(backend.downloadDouble(v), backend.downloadDouble(rv), "\(dtype)")
            XCTAssertEqual(backend.downloadDouble(g), backend.downloadDouble(rg), "the gradient is left as it is, \(dtype)")
        }
    }

    func testEMAFollowsTheFormula() throws {
        let model = try DiT(config: config, backend: backend, seed: 3)
        let ema = ExponentialMovingAverage(arena: model.arena, decay: 0.99)
        let start = backend.download(ema.average)
        XCTAssertEqual(start, backend.download(model.arena.values))
        backend.fill(model.arena.values, with: 1)
        ema.update(step: 5)
        let d = Float(ema.effectiveDecay(afterUpdates: 5))
        XCTAssertEqual(backend.download(ema.average), start.map { d * $0 + (1 - d) * 1 })
        XCTAssertEqual(ema.shadows.count, model.parameters.count)
        XCTAssertEqual(ema.shadows.map(\.shape), model.parameters.map(\.value.shape))
        XCTAssertTrue(ema.shadows.allSatisfy { $0.buffer === ema.average.buffer })
    }

    func testSquaredNormIsDeterministicAcrossThreadCounts() {
        let x = randomTensor([300_007], dtype: .f32, seed: 4, backend: backend)
        let values = backend.download(x)
        let norms = [1, 2, 3, 8].map { threads -> Double in
            let cpu = CPUBackend(threads: threads)
            return cpu.squaredNorm(cpu.upload(values, shape: [values.count], dtype: .f32))
        }
        XCTAssertEqual(Set(norms).count, 1, "\(norms)")
        XCTAssertEqual(norms[0], backend.sumOfSquares(x), accuracy: 1e-12 * norms[0])
        XCTAssertEqual(backend.squaredNorm(backend.cast(x, to: .f64)), norms[0], accuracy: 1e-12 * norms[0])
        XCTAssertEqual(backend.squaredNorm(backend.zeros([0], dtype: .f32)), 0)
    }

    /// Weights loaded into a bf16 model land exactly in its f32 master; a checkpoint of a bf16 run loads exactly
    /// into an f32 model.
    func testBF16LoadingAndCheckpointKeepExactWeights() throws {
        let source = try DiT(config: config, backend: backend, seed: 5)
        setGradients(source, step: 1)
        AdamW(arena: source.arena, hyperparameters: h).update(learningRate: 1e-2)  // weights off the init values
        let folder = Fixtures.temporaryDirectory()
        let weights = folder.appendingPathComponent("weights.safetensors")
        try SafetensorsWriter.write(source.stateDict(), metadata: ["config": config.json], to: weights,
                                    backend: backend)
        let bf16 = try DiTCheckpoint.load(path: weights.path, backend: backend, dtype: .bf16)
        XCTAssertEqual(backend.download(bf16.arena.master!), backend.download(source.arena.values))
        XCTAssertEqual(backend.download(bf16.arena.values), backend.download(backend.cast(source.arena.values, to: .bf16)))
        let inference = try DiTCheckpoint.load(path: weights.path, backend: backend, dtype: .bf16, keepsMaster: false)
        XCTAssertNil(inference.arena.master)
        XCTAssertEqual(backend.download(inference.arena.values), backend.download(bf16.arena.values))

        let (optimizer, ema) = (AdamW(arena: bf16.arena, hyperparameters: h),
                                ExponentialMovingAverage(arena: bf16.arena, decay: 0.9))
        setGradients(bf16, step: 2)
        optimizer.update(learningRate: 1e-2)
        ema.update(step: 1)
        let checkpoint = folder.appendingPathComponent("checkpoint.safetensors")
        try TrainingCheckpoint.save(to: checkpoint, model: bf16, ema: ema, optimizer: optimizer,
                                    state: state(step: 1))
        let file = try SafetensorsFile(url: checkpoint)
        XCTAssertEqual(try file.info("model.blocks.0.attn.qkv.weight").dtype, .f32)
        XCTAssertEqual(try file.info("ema.blocks.0.attn.qkv.weight").dtype, .f32)
        let raw = try DiTCheckpoint.load(path: checkpoint.path, backend: backend, preferEMA: false)
        XCTAssertEqual(backend.download(raw.arena.values), backend.download(bf16.arena.master!))
        let smoothed = try DiTCheckpoint.load(path: checkpoint.path, backend: backend)
        XCTAssertEqual(backend.download(smoothed.arena.values), backend.download(ema.average))
    }

    func state(step: Int) -> TrainingState {
        TrainingState(step: step, randomSeed: 1, randomPosition: 0, samplerEpoch: 0, samplerPosition: 0,
                      options: TrainingOptions(batchSize: 2))
    }

    /// A bf16-compute arena on the CPU: N steps straight equal N/2, a checkpoint, a fresh model restored from it and
    /// N/2 more — master, compute copy, EMA and moments bit for bit.
    func testBF16ArenaResumeIsBitExact() throws {
        func make() throws -> (DiT, AdamW, ExponentialMovingAverage) {
            let model = try DiT(config: config, backend: backend, dtype: .bf16, seed: 6)
            return (model, AdamW(arena: model.arena, hyperparameters: h),
                    ExponentialMovingAverage(arena: model.arena, decay: 0.95))
        }
        func train(_ run: (DiT, AdamW, ExponentialMovingAverage), steps: ClosedRange<Int>) {
            for step in steps {
                setGradients(run.0, step: step)
                let (_, scale) = clipGradientNorm(run.0.arena, maxNorm: 0.3)
                run.1.update(learningRate: 1e-2, gradScale: scale)
                run.2.update(step: run.1.step)
            }
        }
        func snapshot(_ run: (DiT, AdamW, ExponentialMovingAverage)) -> [[Float]] {
            [backend.download(run.0.arena.master!), backend.download(run.0.arena.values),
             backend.download(run.2.average)] + run.1.stateDict().map { backend.download($0.tensor) }
        }
        let straight = try make()
        train(straight, steps: 1...6)

        let first = try make()
        train(first, steps: 1...3)
        let checkpoint = Fixtures.temporaryDirectory().appendingPathComponent("checkpoint.safetensors")
        try TrainingCheckpoint.save(to: checkpoint, model: first.0, ema: first.2, optimizer: first.1,
                                    state: state(step: 3))
        let second = try make()
        let restored = try TrainingCheckpoint.restore(from: checkpoint, model: second.0, ema: second.2,
                                                      optimizer: second.1)
        XCTAssertEqual(restored.step, 3)
        XCTAssertEqual(second.1.step, 3)
        XCTAssertEqual(snapshot(second), snapshot(first))
        train(second, steps: 4...6)
        XCTAssertEqual(snapshot(second), snapshot(straight))
    }

    /// The update leaves a linear layer's weight gradient stale rather than zeroing it: the next backward's product
    /// overwrites it (a second backward before the next update adds), the bias gradient is zeroed, and a gradient
    /// no backward wrote reads as zero to the norm and the next update.
    func testUpdateLeavesProductGradientsToBeOverwritten() {
        let first = Linear(backend: backend, name: "a", inFeatures: 3, outFeatures: 2, dtype: .f32, seed: 1)
        let second = Linear(backend: backend, name: "b", inFeatures: 2, outFeatures: 2, dtype: .f32, seed: 2)
        let arena = ParameterArena(parameters: first.parameters + second.parameters, computeDType: .f32,
                                   backend: backend)
        let optimizer = AdamW(arena: arena, hyperparameters: h)
        let x = randomTensor([4, 3], dtype: .f32, seed: 5, backend: backend)
        let dy = randomTensor([4, 2], dtype: .f32, seed: 6, backend: backend)
        let product = backend.download(backend.matmul(dy, x, transposeA: true))
        _ = first.backward(dy, input: x)
        _ = second.backward(dy, input: backend.randomNormal([4, 2], dtype: .f32, seed: 7, offset: 0))
        optimizer.update(learningRate: 1e-3)
        XCTAssertTrue(first.weight.gradientIsStale && second.weight.gradientIsStale)
        XCTAssertEqual(backend.download(first.bias!.gradient), [0, 0])
        _ = first.backward(dy, input: x)
        XCTAssertFalse(first.weight.gradientIsStale)
        XCTAssertEqual(backend.download(first.weight.gradient), product, "overwritten, not added to")
        _ = first.backward(dy, input: x)
        XCTAssertEqual(backend.download(first.weight.gradient), product.map { $0 + $0 }, "a second backward adds")
        // `second` ran no backward since the update: its stale gradient reads as zero.
        let expected = (backend.download(first.weight.gradient) + backend.download(first.bias!.gradient))
            .reduce(0) { $0 + Double($1) * Double($1) }
        XCTAssertEqual(clipGradientNorm(arena, maxNorm: nil).norm, expected.squareRoot(), accuracy: 1e-5)
        XCTAssertFalse(second.weight.gradientIsStale)
        XCTAssertEqual(backend.download(second.weight.gradient), [0, 0, 0, 0])
    }
}
