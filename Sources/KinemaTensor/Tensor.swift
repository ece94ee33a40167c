/// Memory owned by a backend. The address is a host pointer on the CPU and a device address on a GPU;
/// the backend that made it frees it (or returns it to its cache) when the last tensor using it goes away.
public final class Buffer: @unchecked Sendable {
    public let device: Device
    public let byteCount: Int
    public let address: UnsafeMutableRawPointer
    private let release: (UnsafeMutableRawPointer, Int) -> Void

    public init(device: Device, byteCount: Int, address: UnsafeMutableRawPointer,
                release: @escaping (UnsafeMutableRawPointer, Int) -> Void) {
        self.device = device
        self.byteCount = byteCount
        self.address = address
        self.release = release
    }

    deinit { release(address, byteCount) }
}

/// A contiguous, row-major tensor: a shape and a dtype over a range of a buffer. Views (`reshaped`, `slice`,
/// subscripts along the first axis) share the buffer; every op returns a new contiguous tensor unless it says
/// it works in place.
public struct Tensor: @unchecked Sendable, CustomStringConvertible {
    public let shape: [Int]
    public let dtype: DType
    public let buffer: Buffer
    /// Offset into `buffer`, in elements of `dtype`.
    public let offset: Int

    public init(shape: [Int], dtype: DType, buffer: Buffer, offset: Int = 0) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in shape \(shape)")
        precondition((offset + shape.reduce(1, *)) * dtype.byteSize <= buffer.byteCount,
                     "tensor of shape \(shape) \(dtype) at offset \(offset) does not fit its buffer")
        self.shape = shape
        self.dtype = dtype
        self.buffer = buffer
        self.offset = offset
    }

    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }
    public var device: Device { buffer.device }
    public var byteCount: Int { count * dtype.byteSize }
    /// Address of the first element (host pointer on the CPU, device address on a GPU).
    public var address: UnsafeMutableRawPointer { buffer.address + offset * dtype.byteSize }

    public var description: String { "Tensor(\(shape), \(dtype), \(device))" }

    /// The same elements under another shape; one dimension may be -1 and is inferred.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var resolved = newShape
        if let hole = newShape.firstIndex(of: -1) {
            let known = newShape.enumerated().filter { $0.offset != hole }.map(\.element).reduce(1, *)
            precondition(known > 0 && count % known == 0, "cannot reshape \(shape) to \(newShape)")
            resolved[hole] = count / known
        }
        precondition(resolved.reduce(1, *) == count, "cannot reshape \(shape) (\(count) elements) to \(newShape)")
        return Tensor(shape: resolved, dtype: dtype, buffer: buffer, offset: offset)
    }

    /// Rows `range` of the first axis, as a view.
    public func slice(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0],
                     "slice \(range) out of bounds for shape \(shape)")
        let rowCount = shape.dropFirst().reduce(1, *)
        return Tensor(shape: [range.count] + shape.dropFirst(), dtype: dtype, buffer: buffer,
                      offset: offset + range.lowerBound * rowCount)
    }

    /// Row `index` of the first axis, as a view with that axis removed.
    public subscript(index: Int) -> Tensor {
        slice(index..<(index + 1)).reshaped(Array(shape.dropFirst()))
    }
}
