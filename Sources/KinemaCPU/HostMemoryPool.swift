import Foundation

/// Reuses freed host buffers by exact size. A training step allocates the same shapes every time, so after the
/// first step no op goes to malloc — and, more to the point, no large buffer is mapped and faulted in afresh
/// (that page-fault cost was a third of a small model's step time).
final class HostMemoryPool: @unchecked Sendable {
    private var free: [Int: [UnsafeMutableRawPointer]] = [:]
    private var cachedBytes = 0
    private let limit: Int
    private let lock = NSLock()

    /// Keeps at most `limit` bytes of freed buffers; beyond that they go back to the system.
    init(limit: Int) {
        self.limit = limit
    }

    deinit {
        for pointers in free.values { for pointer in pointers { pointer.deallocate() } }
    }

    func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        lock.lock()
        if let pointer = free[bytes]?.popLast() {
            cachedBytes -= bytes
            lock.unlock()
            return pointer
        }
        lock.unlock()
        return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
    }

    func release(_ pointer: UnsafeMutableRawPointer, _ bytes: Int) {
        lock.lock()
        if cachedBytes + bytes <= limit {
            free[bytes, default: []].append(pointer)
            cachedBytes += bytes
            lock.unlock()
        } else {
            lock.unlock()
            pointer.deallocate()
        }
    }
}
