import Foundation
import KinemaTensor

extension CPUBackend: MemoryOps {
    public func empty(_ shape: [Int], dtype: DType) -> Tensor {
        let count = shape.reduce(1, *)
        let bytes = Swift.max(count * dtype.byteSize, 1)
        let pool = memoryPool
        let buffer = Buffer(device: .cpu, byteCount: bytes, address: pool.allocate(bytes)) { pool.release($0, $1) }
        let tensor = Tensor(shape: shape, dtype: dtype, buffer: buffer)
        #if DEBUG
        // Poison fresh memory so a kernel that forgets an element fails its test instead of passing on zeros.
        if dtype.isFloatingPoint { fill(tensor, with: .nan) }
        #endif
        return tensor
    }

    public func zeros(_ shape: [Int], dtype: DType) -> Tensor {
        let tensor = empty(shape, dtype: dtype)
        memset(tensor.address, 0, tensor.byteCount)
        return tensor
    }

    public func fill(_ tensor: Tensor, with value: Double) {
        switch tensor.dtype {
        case .f32: fillElements(tensor.elements(Float.self), tensor.count, Float(value))
        case .f64: fillElements(tensor.elements(Double.self), tensor.count, value)
        case .bf16: fillElements(tensor.elements(UInt16.self), tensor.count, bf16Bits(from: Float(value)))
        case .f16: fillElements(tensor.elements(UInt16.self), tensor.count, f16Bits(from: Float(value)))
        case .i32: fillElements(tensor.elements(Int32.self), tensor.count, Int32(value))
        case .i64: fillElements(tensor.elements(Int64.self), tensor.count, Int64(value))
        }
    }

    private func fillElements<T>(_ pointer: UnsafeMutablePointer<T>, _ count: Int, _ value: T) {
        parallelFor(count) { range in (pointer + range.lowerBound).update(repeating: value, count: range.count) }
    }

    public func upload(_ values: [Float], shape: [Int], dtype: DType) -> Tensor {
        upload(host: values, as: .f32, shape: shape, dtype: dtype)
    }

    public func upload(_ values: [Double], shape: [Int], dtype: DType) -> Tensor {
        upload(host: values, as: .f64, shape: shape, dtype: dtype)
    }

    /// Host values of element type `hostType` to a new tensor of `dtype`.
    private func upload<T>(host values: [T], as hostType: DType, shape: [Int], dtype: DType) -> Tensor {
        precondition(values.count == shape.reduce(1, *), "upload: \(values.count) values for shape \(shape)")
        let tensor = empty(shape, dtype: dtype)
        guard !values.isEmpty else { return tensor }
        values.withUnsafeBufferPointer { source in
            convert(from: UnsafeRawPointer(source.baseAddress!), hostType, to: tensor.address, tensor.dtype,
                    count: values.count)
        }
        return tensor
    }

    public func upload(_ values: [Int32], shape: [Int]) -> Tensor {
        precondition(values.count == shape.reduce(1, *), "upload: \(values.count) values for shape \(shape)")
        let tensor = empty(shape, dtype: .i32)
        values.withUnsafeBytes { tensor.address.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return tensor
    }

    public func upload(bytes: UnsafeRawBufferPointer, shape: [Int], dtype: DType) -> Tensor {
        let tensor = empty(shape, dtype: dtype)
        precondition(bytes.count == tensor.byteCount, "upload: \(bytes.count) bytes for \(shape) \(dtype)")
        if bytes.count > 0 { tensor.address.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        return tensor
    }

    public func download(_ tensor: Tensor) -> [Float] {
        [Float](unsafeUninitializedCapacity: tensor.count) { out, initialized in
            convert(from: tensor.address, tensor.dtype, to: UnsafeMutableRawPointer(out.baseAddress!), .f32,
                    count: tensor.count)
            initialized = tensor.count
        }
    }

    public func downloadDouble(_ tensor: Tensor) -> [Double] {
        [Double](unsafeUninitializedCapacity: tensor.count) { out, initialized in
            convert(from: tensor.address, tensor.dtype, to: UnsafeMutableRawPointer(out.baseAddress!), .f64,
                    count: tensor.count)
            initialized = tensor.count
        }
    }

    public func downloadBytes(_ tensor: Tensor) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: tensor.address, count: tensor.byteCount))
    }

    public func copy(_ source: Tensor, into destination: Tensor) {
        precondition(source.count == destination.count,
                     "copy: \(source.shape) into \(destination.shape) (element counts differ)")
        convert(from: source.address, source.dtype, to: destination.address, destination.dtype, count: source.count)
    }

    public func cast(_ tensor: Tensor, to dtype: DType) -> Tensor {
        let out = empty(tensor.shape, dtype: dtype)
        copy(tensor, into: out)
        return out
    }

    /// Element conversion between any two dtypes: f64 goes through Double, everything else through Float, so
    /// f32 → bf16/f16 is a single correctly rounded step.
    private func convert(from source: UnsafeRawPointer, _ sourceType: DType, to destination: UnsafeMutableRawPointer,
                         _ destinationType: DType, count: Int) {
        if sourceType == destinationType {
            parallelFor(count * sourceType.byteSize, grain: 1 << 20) { range in
                (destination + range.lowerBound).copyMemory(from: source + range.lowerBound, byteCount: range.count)
            }
            return
        }
        parallelFor(count) { range in
            for i in range {
                let value = Self.load(source, sourceType, i)
                Self.store(destination, destinationType, i, value)
            }
        }
    }

    @inline(__always)
    private static func load(_ base: UnsafeRawPointer, _ dtype: DType, _ i: Int) -> Double {
        switch dtype {
        case .f32: return Double(base.assumingMemoryBound(to: Float.self)[i])
        case .f64: return base.assumingMemoryBound(to: Double.self)[i]
        case .bf16: return Double(float(fromBF16: base.assumingMemoryBound(to: UInt16.self)[i]))
        case .f16: return Double(float(fromF16: base.assumingMemoryBound(to: UInt16.self)[i]))
        case .i32: return Double(base.assumingMemoryBound(to: Int32.self)[i])
        case .i64: return Double(base.assumingMemoryBound(to: Int64.self)[i])
        }
    }

    @inline(__always)
    private static func store(_ base: UnsafeMutableRawPointer, _ dtype: DType, _ i: Int, _ value: Double) {
        switch dtype {
        case .f32: base.assumingMemoryBound(to: Float.self)[i] = Float(value)
        case .f64: base.assumingMemoryBound(to: Double.self)[i] = value
        // A Double → Float → bf16 path would round twice; from f32 sources the Double is exact, so this is
        // the correctly rounded f32 → bf16 conversion.
        case .bf16: base.assumingMemoryBound(to: UInt16.self)[i] = bf16Bits(from: Float(value))
        case .f16: base.assumingMemoryBound(to: UInt16.self)[i] = f16Bits(from: Float(value))
        case .i32: base.assumingMemoryBound(to: Int32.self)[i] = Int32(value)
        case .i64: base.assumingMemoryBound(to: Int64.self)[i] = Int64(value)
        }
    }

    public func im2col(_ x: Tensor, _ plan: Im2ColPlan) -> Tensor {
        precondition(x.shape == [plan.batch, plan.channels, plan.height, plan.width],
                     "im2col: input \(x.shape) does not match the plan")
        let out = empty(plan.outputShape, dtype: x.dtype)
        let size = x.dtype.byteSize, source = x.address, destination = out.address
        let (oh, ow, k) = (plan.outputHeight, plan.outputWidth, plan.kernelHeight * plan.kernelWidth)
        parallelFor(plan.batch * oh * ow, grain: Swift.max(1, 4096 / Swift.max(1, plan.columnCount))) { range in
            for row in range {
                let b = row / (oh * ow), oy = (row / ow) % oh, ox = row % ow
                var target = destination + row * plan.columnCount * size
                for c in 0..<plan.channels {
                    for tap in 0..<k {
                        let y = oy * plan.stride + tap / plan.kernelWidth - plan.padTop
                        let xx = ox * plan.stride + tap % plan.kernelWidth - plan.padLeft
                        if y >= 0 && y < plan.height && xx >= 0 && xx < plan.width {
                            let offset = ((b * plan.channels + c) * plan.height + y) * plan.width + xx
                            target.copyMemory(from: source + offset * size, byteCount: size)
                        } else {
                            target.initializeMemory(as: UInt8.self, repeating: 0, count: size)
                        }
                        target += size
                    }
                }
            }
        }
        return out
    }

    public func permute(_ x: Tensor, _ axes: [Int]) -> Tensor {
        let plan = PermutePlan(shape: x.shape, axes: axes)
        let extents = plan.extents, strides = plan.strides
        let out = empty(plan.outputShape, dtype: x.dtype)
        guard out.count > 0 else { return out }
        let inner = extents.last!, innerStride = strides.last!
        let rows = out.count / inner
        let elementSize = x.dtype.byteSize
        let source = x.address, destination = out.address
        parallelFor(rows, grain: Swift.max(1, 16_384 / inner)) { range in
            for row in range {
                var rest = row, sourceOffset = 0
                for axis in stride(from: extents.count - 2, through: 0, by: -1) {
                    sourceOffset += (rest % extents[axis]) * strides[axis]
                    rest /= extents[axis]
                }
                let target = destination + row * inner * elementSize
                if innerStride == 1 {
                    target.copyMemory(from: source + sourceOffset * elementSize, byteCount: inner * elementSize)
                } else {
                    for j in 0..<inner {
                        (target + j * elementSize).copyMemory(from: source + (sourceOffset + j * innerStride) * elementSize,
                                                              byteCount: elementSize)
                    }
                }
            }
        }
        return out
    }

    public func copyBlocks(_ copies: [BlockCopy], from inputs: [Tensor], shape: [Int], dtype: DType) -> Tensor {
        let out = empty(shape, dtype: dtype)
        for copy in copies {
            (out.address + copy.destinationOffset).copyMemory(from: inputs[copy.input].address + copy.sourceOffset,
                                                              byteCount: copy.byteCount)
        }
        return out
    }

    /// The CPU runs each op as it is called, so the device's time is the wall clock around each run of `body`.
    public func measureSeconds(repeating count: Int, _ body: () -> Void) -> [Double] {
        (0..<count).map { _ in
            let start = DispatchTime.now().uptimeNanoseconds
            body()
            return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        }
    }
}
