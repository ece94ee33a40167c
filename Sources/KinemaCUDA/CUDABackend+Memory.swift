import Foundation
import KinemaTensor

extension CUDABackend: MemoryOps {
    @inline(__always)
    func deviceAddress(_ tensor: Tensor) -> UInt64 { UInt64(UInt(bitPattern: tensor.address)) }

    public func empty(_ shape: [Int], dtype: DType) -> Tensor {
        let bytes = Swift.max(shape.reduce(1, *) * dtype.byteSize, 1)
        let block: (address: UInt64, size: Int)
        do { block = try allocator.allocate(bytes) } catch { preconditionFailure("\(error)") }
        let allocator = self.allocator
        let buffer = Buffer(device: device, byteCount: bytes,
                            address: UnsafeMutableRawPointer(bitPattern: UInt(block.address))!) { pointer, _ in
            allocator.release(UInt64(UInt(bitPattern: pointer)), size: block.size)
        }
        let tensor = Tensor(shape: shape, dtype: dtype, buffer: buffer)
        if poisonsNewTensors && dtype.isFloatingPoint { fill(tensor, with: .nan) }
        return tensor
    }

    public func zeros(_ shape: [Int], dtype: DType) -> Tensor {
        let tensor = empty(shape, dtype: dtype)
        fill(tensor, with: 0)
        return tensor
    }

    public func fill(_ tensor: Tensor, with value: Double) {
        guard tensor.count > 0 else { return }
        let n = Int64(tensor.count)
        switch tensor.dtype {
        case .f32: launch("fill_u32", count: tensor.count, [tensor, Float(value).bitPattern, n])
        case .i32: launch("fill_u32", count: tensor.count, [tensor, UInt32(bitPattern: Int32(value)), n])
        case .f64: launch("fill_u64", count: tensor.count, [tensor, value.bitPattern, n])
        case .i64: launch("fill_u64", count: tensor.count, [tensor, UInt64(bitPattern: Int64(value)), n])
        case .bf16: launch("fill_u16", count: tensor.count, [tensor, bf16Bits(from: Float(value)), n])
        case .f16: launch("fill_u16", count: tensor.count, [tensor, f16Bits(from: Float(value)), n])
        }
    }

    public func upload(_ values: [Float], shape: [Int], dtype: DType) -> Tensor {
        precondition(values.count == shape.reduce(1, *), "upload: \(values.count) values for shape \(shape)")
        return uploadBytes(hostBytes(values.map(Double.init), dtype: dtype), shape: shape, dtype: dtype)
    }

    public func upload(_ values: [Double], shape: [Int], dtype: DType) -> Tensor {
        precondition(values.count == shape.reduce(1, *), "upload: \(values.count) values for shape \(shape)")
        return uploadBytes(hostBytes(values, dtype: dtype), shape: shape, dtype: dtype)
    }

    public func upload(_ values: [Int32], shape: [Int]) -> Tensor {
        precondition(values.count == shape.reduce(1, *), "upload: \(values.count) values for shape \(shape)")
        return uploadBytes(values.withUnsafeBytes { Array($0) }, shape: shape, dtype: .i32)
    }

    public func upload(bytes: UnsafeRawBufferPointer, shape: [Int], dtype: DType) -> Tensor {
        uploadBytes(Array(bytes), shape: shape, dtype: dtype)
    }

    private func uploadBytes(_ bytes: [UInt8], shape: [Int], dtype: DType) -> Tensor {
        let tensor = empty(shape, dtype: dtype)
        precondition(bytes.count == tensor.byteCount, "upload: \(bytes.count) bytes for \(shape) \(dtype)")
        if !bytes.isEmpty {
            // Ordered on the stream after the work queued before it. From pageable memory the driver copies `bytes`
            // into its own staging buffer before the call returns, so nothing waits here: an upload in the middle of
            // a step (a timestep table, sampler coefficients) does not drain the GPU's queue.
            bytes.withUnsafeBytes { source in
                check(driver.cuMemcpyHtoDAsync(deviceAddress(tensor), source.baseAddress!, bytes.count, stream),
                      "cuMemcpyHtoDAsync")
            }
        }
        return tensor
    }

    /// Host values encoded as `dtype` (bf16/f16 rounded to nearest even from f32, as the CPU does).
    private func hostBytes(_ values: [Double], dtype: DType) -> [UInt8] {
        switch dtype {
        case .f64: return values.withUnsafeBytes { Array($0) }
        case .i64: return values.map { Int64($0) }.withUnsafeBytes { Array($0) }
        case .i32: return values.map { Int32($0) }.withUnsafeBytes { Array($0) }
        default: return encodeFloats(values.map(Float.init), dtype: dtype)
        }
    }

    public func download(_ tensor: Tensor) -> [Float] {
        let bytes = downloadBytes(tensor)
        return bytes.withUnsafeBytes { decodeFloats($0, dtype: tensor.dtype) }
    }

    public func downloadDouble(_ tensor: Tensor) -> [Double] {
        let bytes = downloadBytes(tensor)
        if tensor.dtype == .f64 { return bytes.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) } }
        return bytes.withUnsafeBytes { decodeFloats($0, dtype: tensor.dtype) }.map(Double.init)
    }

    public func downloadBytes(_ tensor: Tensor) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: tensor.byteCount)
        if !bytes.isEmpty {
            // Waits for the work that writes `tensor` (queued before the copy on the same stream), then for the copy.
            bytes.withUnsafeMutableBytes {
                check(driver.cuMemcpyDtoHAsync($0.baseAddress!, deviceAddress(tensor), tensor.byteCount, stream),
                      "cuMemcpyDtoHAsync")
                synchronize()
            }
        }
        return bytes
    }

    public func copy(_ source: Tensor, into destination: Tensor) {
        precondition(source.count == destination.count,
                     "copy: \(source.shape) into \(destination.shape) (element counts differ)")
        guard source.count > 0 else { return }
        if source.dtype == destination.dtype {
            check(driver.cuMemcpyDtoDAsync(deviceAddress(destination), deviceAddress(source), source.byteCount, stream),
                  "cuMemcpyDtoDAsync")
            return
        }
        let codes: [DType: Int32] = [.f32: 0, .f64: 1, .bf16: 2, .f16: 3]
        guard let from = codes[source.dtype], let to = codes[destination.dtype] else {
            preconditionFailure("copy: CUDA casts between floating dtypes only, not \(source.dtype) → \(destination.dtype)")
        }
        launch("cast", count: source.count, [source, from, destination, to, Int64(source.count)])
    }

    public func cast(_ tensor: Tensor, to dtype: DType) -> Tensor {
        let out = empty(tensor.shape, dtype: dtype)
        copy(tensor, into: out)
        return out
    }

    public func permute(_ x: Tensor, _ axes: [Int]) -> Tensor {
        let plan = PermutePlan(shape: x.shape, axes: axes)
        let out = empty(plan.outputShape, dtype: x.dtype)
        guard out.count > 0 else { return out }
        var meta = [Int64](repeating: 1, count: 13)  // [rank, output shape ×6, source strides ×6]
        meta[0] = Int64(x.rank)
        for axis in 0..<x.rank {
            meta[1 + axis] = Int64(plan.outputShape[axis])
            meta[7 + axis] = Int64(plan.sourceStrides[axis])
        }
        let metaTensor = uploadBytes(meta.withUnsafeBytes { Array($0) }, shape: [13], dtype: .i64)
        launch("permute", count: out.count, [x, out, metaTensor, Int32(x.dtype.byteSize), Int64(out.count)])
        return out
    }

    /// The plan's copies, one kernel launch per input: an input's blocks are evenly spaced rows (see BlockCopies).
    public func copyBlocks(_ copies: [BlockCopy], from inputs: [Tensor], shape: [Int], dtype: DType) -> Tensor {
        let out = empty(shape, dtype: dtype)
        var start = 0
        while start < copies.count {
            var end = start + 1
            while end < copies.count && copies[end].input == copies[start].input { end += 1 }
            let first = copies[start], rows = end - start
            let sourcePitch = rows > 1 ? copies[start + 1].sourceOffset - first.sourceOffset : first.byteCount
            let destinationPitch = rows > 1 ? copies[start + 1].destinationOffset - first.destinationOffset : first.byteCount
            let source = deviceAddress(inputs[first.input]) + UInt64(first.sourceOffset)
            let destination = deviceAddress(out) + UInt64(first.destinationOffset)
            let wide = [Int(source), Int(destination), first.byteCount, sourcePitch, destinationPitch].allSatisfy { $0 % 16 == 0 }
            let words = rows * first.byteCount / (wide ? 16 : 2)
            launch("copy_rows", count: words,
                   [source, destination, Int64(rows), Int64(first.byteCount), Int64(sourcePitch),
                    Int64(destinationPitch), Int32(wide ? 1 : 0)])
            start = end
        }
        return out
    }

    /// The device time between two events recorded on the stream before and after the work `body` queues (host
    /// waits inside `body`, e.g. a download, count as the device idling between its work).
    public func measureSeconds(_ body: () -> Void) -> Double {
        do {
            var start: UnsafeMutableRawPointer?, end: UnsafeMutableRawPointer?
            try driver.check(driver.cuEventCreate(&start, CUDADriver.eventDefault), "cuEventCreate")
            defer { _ = driver.cuEventDestroy(start!) }
            try driver.check(driver.cuEventCreate(&end, CUDADriver.eventDefault), "cuEventCreate")
            defer { _ = driver.cuEventDestroy(end!) }
            try driver.check(driver.cuEventRecord(start!, stream), "cuEventRecord")
            body()
            try driver.check(driver.cuEventRecord(end!, stream), "cuEventRecord")
            try driver.check(driver.cuEventSynchronize(end!), "cuEventSynchronize")
            var milliseconds: Float = 0
            try driver.check(driver.cuEventElapsedTime(&milliseconds, start!, end!), "cuEventElapsedTime")
            return Double(milliseconds) / 1000
        } catch {
            preconditionFailure("\(error)")
        }
    }

    func check(_ result: Int32, _ function: String) {
        do { try driver.check(result, function) } catch { preconditionFailure("\(error)") }
    }
}
