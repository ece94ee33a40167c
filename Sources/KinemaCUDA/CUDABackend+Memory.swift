import Foundation
import KinemaTensor

extension CUDABackend: MemoryOps {
    @inline(__always)
    func deviceAddress(_ tensor: Tensor) -> UInt64 { UInt64(UInt(bitPattern: tensor.address)) }

    public func empty(_ shape: [Int], dtype: DType) -> Tensor {
        let bytes = Swift.max(shape.reduce(1, *) * dtype.byteSize, 1)
        let block: (address: UInt64, size: Int)
        do { block = try allocator.allocate(bytes) } catch { fatalError("\(error)") }
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

    /// One launch for all ranges: a block per piece of at most `fillPieceElements` (grid-strided over them), its
    /// threads over the piece's elements, so a long range is not one block's work. The pieces go up as a small i64
    /// table [start, count] ahead of it on the stream.
    public func fill(_ tensor: Tensor, ranges: [Range<Int>], with value: Double) {
        precondition(ranges.allSatisfy { $0.lowerBound >= 0 && $0.upperBound <= tensor.count },
                     "fill: a range outside a tensor of \(tensor.count) elements")
        let pieces = ranges.flatMap { range in
            stride(from: range.lowerBound, to: range.upperBound, by: Self.fillPieceElements).map {
                $0..<Swift.min($0 + Self.fillPieceElements, range.upperBound)
            }
        }
        guard !pieces.isEmpty else { return }
        let table = upload(pieces.flatMap { [Double($0.lowerBound), Double($0.count)] }, shape: [pieces.count, 2],
                           dtype: .i64)
        let count = Int32(pieces.count), grid = (Swift.min(pieces.count, 1024), 1, 1), block = (256, 1, 1)
        switch tensor.dtype {
        case .f32, .i32:
            let bits = tensor.dtype == .f32 ? Float(value).bitPattern : UInt32(bitPattern: Int32(value))
            launch("fill_ranges_u32", in: "Elementwise", grid: grid, block: block, [tensor, table, count, bits])
        case .f64, .i64:
            let bits = tensor.dtype == .f64 ? value.bitPattern : UInt64(bitPattern: Int64(value))
            launch("fill_ranges_u64", in: "Elementwise", grid: grid, block: block, [tensor, table, count, bits])
        case .bf16, .f16:
            let bits = tensor.dtype == .bf16 ? bf16Bits(from: Float(value)) : f16Bits(from: Float(value))
            launch("fill_ranges_u16", in: "Elementwise", grid: grid, block: block, [tensor, table, count, bits])
        }
    }

    private static let fillPieceElements = 8192

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
            awaitConcurrentWork()
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

    public func im2col(_ x: Tensor, _ plan: Im2ColPlan) -> Tensor {
        precondition(x.shape == [plan.batch, plan.channels, plan.height, plan.width],
                     "im2col: input \(x.shape) does not match the plan")
        let out = empty(plan.outputShape, dtype: x.dtype)
        guard out.count > 0 else { return out }
        let sizes = [plan.batch, plan.channels, plan.height, plan.width, plan.kernelHeight, plan.kernelWidth,
                     plan.stride, plan.padTop, plan.padLeft, plan.outputHeight, plan.outputWidth].map { Int32($0) }
        launch("im2col", count: out.count, [x, out, Int32(x.dtype.byteSize)] + sizes.map { $0 as any KernelArgument }
               + [Int64(out.count)])
        return out
    }

    public func permute(_ x: Tensor, _ axes: [Int]) -> Tensor {
        let plan = PermutePlan(shape: x.shape, axes: axes)
        let out = empty(plan.outputShape, dtype: x.dtype)
        guard out.count > 0 else { return out }
        let meta = PermuteWords(plan, elementSize: x.dtype.byteSize, alignment: deviceAddress(x) | deviceAddress(out))
        launch("permute", count: meta.count, [x, out, meta, Int32(meta.wordSize), Int64(meta.count)])
        return out
    }

    /// The plan's copies as one launch: an input's blocks are evenly spaced rows (see BlockCopies), one pitched copy.
    public func copyBlocks(_ copies: [BlockCopy], from inputs: [Tensor], shape: [Int], dtype: DType) -> Tensor {
        let out = empty(shape, dtype: dtype)
        copyRows(rowCopies(copies, from: inputs, into: out))
        return out
    }

    /// All parts in one launch (the extension's default would be a launch per part).
    public func chunk(_ x: Tensor, parts: Int, axis: Int) -> [Tensor] {
        precondition(parts > 0 && x.shape[axis] % parts == 0, "chunk: dimension \(axis) of \(x.shape) not divisible by \(parts)")
        let length = x.shape[axis] / parts
        var pieces: [RowCopy] = []
        let outputs = (0..<parts).map { part in
            let (shape, copies) = BlockCopies.narrow(x, axis: axis, start: part * length, length: length)
            let out = empty(shape, dtype: x.dtype)
            pieces += rowCopies(copies, from: [x], into: out)
            return out
        }
        copyRows(pieces)
        return outputs
    }

    /// A plan's blocks grouped by input into pitched row copies (consecutive blocks of one input are evenly spaced).
    private func rowCopies(_ copies: [BlockCopy], from inputs: [Tensor], into out: Tensor) -> [RowCopy] {
        var result: [RowCopy] = []
        var start = 0
        while start < copies.count {
            var end = start + 1
            while end < copies.count && copies[end].input == copies[start].input { end += 1 }
            let first = copies[start], rows = end - start
            result.append(RowCopy(source: deviceAddress(inputs[first.input]) + UInt64(first.sourceOffset),
                                  destination: deviceAddress(out) + UInt64(first.destinationOffset),
                                  rows: Int64(rows), rowBytes: Int64(first.byteCount),
                                  sourcePitch: Int64(rows > 1 ? copies[start + 1].sourceOffset - first.sourceOffset : first.byteCount),
                                  destinationPitch: Int64(rows > 1 ? copies[start + 1].destinationOffset - first.destinationOffset : first.byteCount)))
            start = end
        }
        return result
    }

    /// Launches `copy_rows` over the copies, up to RowCopies.capacity at a time.
    private func copyRows(_ copies: [RowCopy]) {
        for start in stride(from: 0, to: copies.count, by: RowCopies.capacity) {
            let batch = Array(copies[start..<Swift.min(start + RowCopies.capacity, copies.count)])
            let words = batch.map { Int($0.rows * $0.rowBytes) / 16 }.max()!
            launch("copy_rows", in: "Elementwise", grid: (Swift.max(1, Swift.min((words + 255) / 256, 65_535 * 8)), batch.count, 1),
                   block: (256, 1, 1), [RowCopies(batch)])
        }
    }

    /// The device time of each run of `body`: between events recorded on the stream before the first run and after
    /// each, with one wait at the end (a host wait inside `body`, e.g. a download, counts as the device idling in
    /// that run). Work a run leaves on the second stream (`concurrently`: the EMA) runs beside the next run, as in a
    /// training loop, and is in that run's time as far as it delays it; the last run waits for its own, so the runs
    /// together cover all the work they queued.
    public func measureSeconds(repeating count: Int, _ body: () -> Void) -> [Double] {
        do {
            var events: [UnsafeMutableRawPointer] = []
            defer { for event in events { _ = driver.cuEventDestroy(event) } }
            for _ in 0...count {
                var event: UnsafeMutableRawPointer?
                try driver.check(driver.cuEventCreate(&event, CUDADriver.eventDefault), "cuEventCreate")
                events.append(event!)
            }
            try driver.check(driver.cuEventRecord(events[0], stream), "cuEventRecord")
            for run in 0..<count {
                body()
                if run == count - 1 { awaitConcurrentWork() }
                try driver.check(driver.cuEventRecord(events[run + 1], stream), "cuEventRecord")
            }
            try driver.check(driver.cuEventSynchronize(events[count]), "cuEventSynchronize")
            return try (0..<count).map { run in
                var milliseconds: Float = 0
                try driver.check(driver.cuEventElapsedTime(&milliseconds, events[run], events[run + 1]),
                                 "cuEventElapsedTime")
                return Double(milliseconds) / 1000
            }
        } catch {
            fatalError("\(error)")
        }
    }

    func check(_ result: Int32, _ function: String) {
        do { try driver.check(result, function) } catch { fatalError("\(error)") }
    }
}

/// One pitched copy of `copy_rows` (Kernels/Elementwise.cu): `rows` rows of `rowBytes` bytes.
struct RowCopy {
    var source, destination: UInt64
    var rows, rowBytes, sourcePitch, destinationPitch: Int64
}

/// A permutation in the words the kernel moves (Elementwise.cu's PermuteMeta, by value): when the plan's innermost
/// axis is contiguous in the source (the last axis stays last), its elements travel together as the widest word
/// (16, 8, 4 or 2 bytes) that divides its bytes and both addresses; otherwise one element is one word.
struct PermuteWords: KernelArgument {
    static let maxRank = PermutePlan.maxRank
    var shape = [Int64](repeating: 1, count: maxRank), strides = [Int64](repeating: 0, count: maxRank)
    let rank: Int, wordSize: Int, count: Int

    init(_ plan: PermutePlan, elementSize: Int, alignment: UInt64) {
        rank = plan.extents.count
        let keepsLastAxis = plan.strides[rank - 1] == 1
        let lastBytes = keepsLastAxis ? plan.extents[rank - 1] * elementSize : elementSize
        wordSize = [16, 8, 4, 2].first { lastBytes % $0 == 0 && alignment % UInt64($0) == 0 && $0 >= elementSize }
            ?? elementSize
        let perWord = wordSize / elementSize  // elements per word (1 unless the last axis is kept)
        for axis in 0..<rank {
            let last = axis == rank - 1
            shape[axis] = Int64(last ? plan.extents[axis] / perWord : plan.extents[axis])
            strides[axis] = Int64(last ? plan.strides[axis] : plan.strides[axis] / perWord)
        }
        count = plan.extents.reduce(1, *) / perWord
    }

    func store(at address: UnsafeMutableRawPointer) -> Int {
        let n = Self.maxRank
        for axis in 0..<n {
            address.storeBytes(of: shape[axis], toByteOffset: 8 * axis, as: Int64.self)
            address.storeBytes(of: strides[axis], toByteOffset: 8 * (n + axis), as: Int64.self)
        }
        address.storeBytes(of: Int32(rank), toByteOffset: 16 * n, as: Int32.self)
        address.storeBytes(of: Int32(0), toByteOffset: 16 * n + 4, as: Int32.self)
        return 16 * n + 8
    }
}

/// The kernel's by-value list of up to `capacity` copies (unused slots zero: no rows).
struct RowCopies: KernelArgument {
    static let capacity = 8
    let copies: [RowCopy]

    init(_ copies: [RowCopy]) {
        precondition(copies.count <= Self.capacity, "copy_rows takes at most \(Self.capacity) copies a launch")
        self.copies = copies
    }

    func store(at address: UnsafeMutableRawPointer) -> Int {
        let size = MemoryLayout<RowCopy>.stride, bytes = Self.capacity * size
        address.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        for (index, copy) in copies.enumerated() { address.storeBytes(of: copy, toByteOffset: index * size, as: RowCopy.self) }
        return bytes
    }
}
