import KinemaCPU
import KinemaNN
import KinemaTensor
import KinemaTestSupport
import XCTest

/// The flat parameter storage: views alias the flat buffers, offsets are aligned, padding is zero, a 16-bit arena
/// keeps the exact f32 values as its master.
final class ParameterArenaTests: XCTestCase {
    let cpu = CPUBackend(threads: 2)

    /// Parameters of awkward sizes (21, 3, 7×13, 13, 5) with nonzero values everywhere.
    func makeParameters() -> [Parameter] {
        let a = Linear(backend: cpu, name: "a", inFeatures: 7, outFeatures: 3, dtype: .f32, seed: 1)
        let b = Linear(backend: cpu, name: "b", inFeatures: 13, outFeatures: 7, dtype: .f32, seed: 2)
        let norm = LayerNorm(backend: cpu, name: "n", dim: 5, affine: true, eps: 1e-6, dtype: .f32)
        let parameters = a.parameters + b.parameters + norm.parameters
        for (i, parameter) in parameters.enumerated() where parameter.name.hasSuffix("bias") {
            parameter.value = randomTensor(parameter.value.shape, dtype: .f32, seed: UInt64(50 + i), backend: cpu)
        }
        return parameters
    }

    func testViewsAliasTheFlatBuffers() {
        let parameters = makeParameters()
        let before = parameters.map { cpu.download($0.value) }
        let arena = ParameterArena(parameters: parameters, computeDType: .f32, backend: cpu)
        XCTAssertNil(arena.master)
        XCTAssertNil(arena.computeCopy)
        XCTAssertEqual(arena.offsets, [0, 64, 128, 256, 320, 384])  // 21, 3, 91 (two slots), 7, 5, 5
        XCTAssertEqual(arena.count, 448)
        let flat = cpu.download(arena.values)
        for (index, parameter) in parameters.enumerated() {
            XCTAssertTrue(parameter.value.buffer === arena.values.buffer, parameter.name)
            XCTAssertTrue(parameter.gradient.buffer === arena.gradients.buffer, parameter.name)
            XCTAssertEqual(parameter.value.offset, arena.offsets[index])
            XCTAssertEqual(parameter.gradient.dtype, .f32)
            XCTAssertNil(parameter.master)
            let offset = arena.offsets[index], count = parameter.value.count
            XCTAssertEqual(Array(flat[offset..<(offset + count)]), before[index], parameter.name)
            // Padding up to the next aligned offset is zero.
            let end = index + 1 < parameters.count ? arena.offsets[index + 1] : arena.count
            XCTAssertEqual(Array(flat[(offset + count)..<end]), [Float](repeating: 0, count: end - offset - count))
        }
        // A write through a parameter's view shows in the flat buffer, and the other way round.
        cpu.fill(parameters[2].gradient, with: 3)
        let gradients = cpu.download(arena.gradients)
        XCTAssertEqual(gradients[128..<(128 + 91)].allSatisfy { $0 == 3 }, true)
        XCTAssertEqual(gradients.filter { $0 != 0 }.count, 91)
        cpu.fill(arena.values, with: -1)
        XCTAssertEqual(cpu.download(parameters[5].value), [Float](repeating: -1, count: 5))
    }

    func testZeroGradientsIsOneFill() {
        let arena = ParameterArena(parameters: makeParameters(), computeDType: .f32, backend: cpu)
        cpu.fill(arena.gradients, with: 2.5)
        arena.zeroGradients()
        XCTAssertTrue(cpu.download(arena.gradients).allSatisfy { $0 == 0 })
        for parameter in arena.parameters {
            XCTAssertTrue(cpu.download(parameter.gradient).allSatisfy { $0 == 0 })
        }
    }

    func testSixteenBitArenaKeepsTheExactF32Master() {
        for dtype in [DType.bf16, .f16] {
            let parameters = makeParameters()
            let f32 = parameters.map { cpu.download($0.value) }
            let arena = ParameterArena(parameters: parameters, computeDType: dtype, backend: cpu)
            XCTAssertEqual(arena.values.dtype, dtype)
            XCTAssertEqual(arena.gradients.dtype, .f32)
            XCTAssertEqual(arena.master?.dtype, .f32)
            XCTAssertTrue(arena.weights.buffer === arena.master!.buffer)
            XCTAssertTrue(arena.computeCopy!.buffer === arena.values.buffer)
            for (parameter, values) in zip(parameters, f32) {
                XCTAssertEqual(parameter.value.dtype, dtype)
                XCTAssertTrue(parameter.master!.buffer === arena.master!.buffer)
                XCTAssertTrue(parameter.weights.buffer === arena.master!.buffer)
                XCTAssertEqual(cpu.download(parameter.master!), values, "master must be the f32 values, unrounded")
                // The compute copy is the master rounded once (the cast's round-to-nearest-even).
                let rounded = cpu.download(cpu.cast(cpu.upload(values, shape: [values.count], dtype: .f32), to: dtype))
                XCTAssertEqual(cpu.download(parameter.value), rounded)
            }
            XCTAssertNotEqual(cpu.download(arena.values), cpu.download(arena.master!), "\(dtype) rounds something")
        }
    }

    func testLoadWritesMasterAndRefreshRounds() {
        let parameters = makeParameters()
        let arena = ParameterArena(parameters: parameters, computeDType: .bf16, backend: cpu)
        let weight = parameters[2]
        let loaded = randomTensor(weight.value.shape, dtype: .f32, seed: 9, backend: cpu)
        weight.load(loaded, backend: cpu)
        XCTAssertEqual(cpu.download(weight.master!), cpu.download(loaded))
        XCTAssertEqual(cpu.download(weight.value), cpu.download(cpu.cast(loaded, to: .bf16)))
        // Writing the master alone, then one refresh of the whole compute copy.
        cpu.fill(arena.master!, with: 1.0 + 1.0 / 1024)  // not representable in bf16: rounds to 1
        arena.refreshValuesFromMaster()
        XCTAssertTrue(cpu.download(arena.values).allSatisfy { $0 == 1 })
    }

    func testWithoutMasterAndInF64() {
        let parameters = makeParameters()
        let f32 = parameters.map { cpu.download($0.value) }
        let arena = ParameterArena(parameters: parameters, computeDType: .bf16, backend: cpu, keepsMaster: false)
        XCTAssertNil(arena.master)
        XCTAssertNil(parameters[0].master)
        XCTAssertTrue(arena.weights.buffer === arena.values.buffer)
        XCTAssertEqual(cpu.download(parameters[0].value),
                       cpu.download(cpu.cast(cpu.upload(f32[0], shape: [f32[0].count], dtype: .f32), to: .bf16)))

        let f64 = Linear(backend: cpu, name: "d", inFeatures: 3, outFeatures: 2, dtype: .f64, seed: 4)
        let wide = ParameterArena(parameters: f64.parameters, computeDType: .f64, backend: cpu)
        XCTAssertEqual(wide.gradients.dtype, .f64, "f64 models (the gradient checks) accumulate in f64")
        XCTAssertNil(wide.master)
    }
}
