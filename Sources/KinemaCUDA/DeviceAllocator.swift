import Foundation

/// A caching device allocator: freed blocks wait, by rounded size, for the next request of that size, so a training
/// step that repeats its shapes calls cuMemAlloc only in its first iteration. Reports current and peak bytes.
final class DeviceAllocator: @unchecked Sendable {
    private let driver: CUDADriver
    private var free: [Int: [UInt64]] = [:]
    private let lock = NSLock()
    private(set) var currentBytes = 0
    private(set) var peakBytes = 0
    private(set) var cachedBytes = 0
    private(set) var deviceAllocations = 0

    init(driver: CUDADriver) {
        self.driver = driver
    }

    /// Sizes round up to 512 bytes below 1 MiB and to 2 MiB above, so near-equal shapes share blocks.
    static func roundedSize(_ bytes: Int) -> Int {
        let granule = bytes < (1 << 20) ? 512 : (2 << 20)
        return Swift.max(granule, (bytes + granule - 1) / granule * granule)
    }

    func allocate(_ bytes: Int) throws -> (address: UInt64, size: Int) {
        let size = Self.roundedSize(bytes)
        lock.lock()
        defer { lock.unlock() }
        currentBytes += size
        peakBytes = Swift.max(peakBytes, currentBytes)
        if let address = free[size]?.popLast() {
            cachedBytes -= size
            return (address, size)
        }
        var address: UInt64 = 0
        var result = driver.cuMemAlloc(&address, size)
        if result == 2 {  // CUDA_ERROR_OUT_OF_MEMORY: give the cache back and try once more
            releaseCache()
            result = driver.cuMemAlloc(&address, size)
        }
        do { try driver.check(result, "cuMemAlloc(\(size) bytes)") } catch { currentBytes -= size; throw error }
        deviceAllocations += 1
        return (address, size)
    }

    func release(_ address: UInt64, size: Int) {
        lock.lock()
        defer { lock.unlock() }
        currentBytes -= size
        cachedBytes += size
        free[size, default: []].append(address)
    }

    /// Returns every cached block to the driver (caller holds the lock).
    private func releaseCache() {
        for addresses in free.values { for address in addresses { _ = driver.cuMemFree(address) } }
        free.removeAll()
        cachedBytes = 0
    }
}
