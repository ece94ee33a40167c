import KinemaTensor

extension CUDABackend: RandomOps {
    /// Philox-4x32-10 on the device, one thread per counter; the same values as `Philox4x32.normal` up to the
    /// last-place differences of the device's logf/sinf/cosf. Other dtypes are the f32 values cast on the device.
    public func randomNormal(_ shape: [Int], dtype: DType, seed: UInt64, offset: UInt64) -> Tensor {
        let count = shape.reduce(1, *)
        let values = empty(shape, dtype: .f32)
        if count > 0 {
            let counters = (count + 3) / 4
            launch("philox_normal_f32", in: "Training", count: counters,
                   [values, UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32), offset,
                    Int64(count)])
        }
        return dtype == .f32 ? values : cast(values, to: dtype)
    }
}
