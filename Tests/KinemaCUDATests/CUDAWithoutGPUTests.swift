import Foundation
@testable import KinemaCUDA
import XCTest

/// What the CUDA backend does on machines like CI's: no driver, no GPU. (Its kernels are checked against the CPU
/// on a GPU machine by scripts/gpu-check.)
final class CUDAWithoutGPUTests: XCTestCase {
    func testMissingDriverOrDeviceIsAClearError() {
        do {
            let backend = try CUDABackend()
            print("a GPU is present here: \(backend.name)")
        } catch {
            let message = "\(error)"
            XCTAssertTrue(message.contains("libcuda") || message.contains("no CUDA device") || message.contains("CUDA error"),
                          message)
            if message.contains("libcuda") { XCTAssertTrue(message.contains("--device cpu"), message) }
        }
    }

    func testAllocatorRoundsSizesToShareBlocks() {
        XCTAssertEqual(DeviceAllocator.roundedSize(1), 512)
        XCTAssertEqual(DeviceAllocator.roundedSize(513), 1024)
        XCTAssertEqual(DeviceAllocator.roundedSize(1 << 20), 2 << 20)
        XCTAssertEqual(DeviceAllocator.roundedSize((2 << 20) + 1), 4 << 20)
    }

    /// Kernels are launched dependently (programmatic dependent launch): each may start before the kernel ahead of
    /// it has finished, so each must open with GRID_DEPENDENCY(), which waits for it, before touching memory.
    func testEveryKernelBeginsByWaitingForTheKernelBefore() throws {
        for file in CUDABackend.kernelFiles {
            let source = try CUDABackend.source(of: file)
            var rest = source[...]
            var kernels = 0
            while let global = rest.range(of: "__global__") {
                let body = rest[global.upperBound...]
                guard let brace = body.firstIndex(of: "{") else { return XCTFail("\(file): a __global__ without a body") }
                let first = body[body.index(after: brace)...].drop(while: { $0 == " " || $0 == "\\" || $0 == "\n" })
                XCTAssertTrue(first.hasPrefix("GRID_DEPENDENCY();"),
                              "\(file): kernel \(body.prefix(80)) does not begin with GRID_DEPENDENCY()")
                kernels += 1
                rest = body
            }
            XCTAssertGreaterThan(kernels, 0, file)
        }
    }

    /// The kernel cache key must not change between processes (Swift's Hasher is seeded per process).
    func testKernelCacheKeyIsStable() {
        XCTAssertEqual(NVRTC.fnv1a(""), 0xcbf2_9ce4_8422_2325)
        XCTAssertEqual(NVRTC.fnv1a("a"), 0xaf63_dc4c_8601_ec8c)
    }
}
