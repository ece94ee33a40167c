import Foundation
import KinemaCUDA

// Every CUDA op against the CPU backend on fresh random inputs of several sizes (including sizes that are no
// multiple of a block), with outputs poisoned so an unwritten element fails. Prints one line per check and
// "N passed, M failed"; exits 1 on any failure, 2 without a GPU. Run on a GPU machine by scripts/gpu-check.

let gpu: CUDABackend
do {
    gpu = try CUDABackend(index: 0)
} catch {
    print("no GPU: \(error)")
    exit(2)
}
gpu.poisonsNewTensors = true  // every output starts as NaN: an element a kernel skips cannot pass
print("device: \(gpu.name)")

let harness = GPUCheck(gpu: gpu)
harness.checkMemoryAndElementwise()
harness.checkLinearAlgebra()
harness.checkTraining()
harness.checkNN()

print("\(harness.passed) passed, \(harness.failed) failed")
exit(harness.failed == 0 ? 0 : 1)
