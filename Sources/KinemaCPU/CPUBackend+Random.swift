import KinemaTensor

extension CPUBackend: RandomOps {
    public func randomNormal(_ shape: [Int], dtype: DType, seed: UInt64, offset: UInt64) -> Tensor {
        let count = shape.reduce(1, *)
        let generator = Philox4x32(seed: seed)
        let values = [Float](unsafeUninitializedCapacity: count) { out, initialized in
            let target = out.baseAddress!
            parallelFor(count, grain: 4096) { range in
                for i in range { target[i] = generator.normal(index: UInt64(i), offset: offset) }
            }
            initialized = count
        }
        return upload(values, shape: shape, dtype: dtype)
    }
}
