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

    /// The kernel cache key must not change between processes (Swift's Hasher is seeded per process).
    func testKernelCacheKeyIsStable() {
        XCTAssertEqual(NVRTC.fnv1a(""), 0xcbf2_9ce4_8422_2325)
        XCTAssertEqual(NVRTC.fnv1a("a"), 0xaf63_dc4c_8601_ec8c)
    }
}
