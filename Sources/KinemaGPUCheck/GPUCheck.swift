import Foundation
import KinemaCPU
import KinemaCUDA
import KinemaTensor

/// The harness: a CPU and a GPU backend, comparison with a relative-error bound, and the pass/fail count.
/// Each family of ops has its checks in its own file, as an extension.
final class GPUCheck {
    let cpu = CPUBackend()
    let gpu: CUDABackend
    private(set) var passed = 0
    private(set) var failed = 0
    private var seed: UInt64 = 1

    /// Starts the inputs' seeds over, so a family of checks sees the same inputs whichever families ran before it
    /// (and alone, under --only).
    func restartSeeds() { seed = 1 }

    init(gpu: CUDABackend) {
        self.gpu = gpu
    }

    /// max |ours − reference| / max |reference| ≤ tolerance, and no non-finite value where the reference is finite.
    func check(_ name: String, _ ours: [Float], _ reference: [Float], tolerance: Double = 1e-6) {
        var difference = 0.0, scale = 1e-30, finite = ours.count == reference.count
        for (a, b) in zip(ours, reference) {
            if !a.isFinite && b.isFinite { finite = false }
            difference = max(difference, abs(Double(a) - Double(b)))
            scale = max(scale, abs(Double(b)))
        }
        record(name, finite && difference / scale <= tolerance,
               String(format: "relative error %.2e (bound %.0e)", difference / scale, tolerance))
    }

    func record(_ name: String, _ ok: Bool, _ detail: String) {
        if ok { passed += 1 } else { failed += 1 }
        print("\(ok ? "PASS" : "FAIL") \(name.padding(toLength: 48, withPad: " ", startingAt: 0)) \(detail)")
    }

    /// [B, N, D] shapes for the row and per-sample ops: widths that are a multiple of 8 (16-byte packs) and not, one
    /// token per sample, token counts that split into several runs of rows with a short last one, and rows from one
    /// to twelve packs per lane (the row kernels' instantiations).
    static let tokenShapes = [[2, 5, 7], [3, 1, 72], [2, 200, 72], [3, 77, 130], [1, 300, 13], [4, 256, 1152], [2, 37, 3000]]

    /// Records whether a GPU op gave the same bits twice: its sums run in a fixed order (no atomics).
    func checkRepeats(_ name: String, _ first: [Tensor], _ second: [Tensor]) {
        let identical = zip(first, second).allSatisfy {
            gpu.download($0).map(\.bitPattern) == gpu.download($1).map(\.bitPattern)
        }
        record(name, identical, identical ? "identical" : "DIFFERS")
    }

    /// The same fresh random values (normal, or |normal| + 0.1 when `positive`) on both backends.
    func pair(_ shape: [Int], positive: Bool = false, scale: Float = 1) -> (cpu: Tensor, gpu: Tensor) {
        seed += 1
        var values = cpu.download(cpu.randomNormal(shape, dtype: .f32, seed: seed, offset: 0)).map { $0 * scale }
        if positive { values = values.map { abs($0) + 0.1 } }
        return (cpu.upload(values, shape: shape, dtype: .f32), gpu.upload(values, shape: shape, dtype: .f32))
    }
}
