import KinemaTensor

/// cuda.h's CUtensorMap: the 128-byte TMA descriptor of a tensor in device memory, passed to a kernel by value.
struct TensorMap: KernelArgument {
    var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) =
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
}

extension CUDABackend {
    /// Shared memory of one Hopper product CTA (Kernels/HopperMatmul.cu): 4 stages of A[128 × 64] and B[192 × 64]
    /// bf16, the two consumers' 64 × 192 output buffers, 1 KiB to align them to the swizzle's 1024 bytes, the
    /// barriers (128 bytes) and the consumers' bias tiles (2 × 192 bf16).
    private static let hopperSharedBytes = 4 * (128 + 192) * 64 * 2 + 2 * 64 * 192 * 2 + 1024 + 128 + 2 * 192 * 2

    /// c[M, N] = a[M, K] · op(b) on the Hopper kernel, with a cuBLASLt-style epilogue: b is the weight [N, K] when
    /// `transposeB` (x Wᵀ, the forward) or [K, N] (dy W, the input gradient); in the input gradient, `columnSums`
    /// (f32 [K]) also receives += Σ over a's rows (the bias gradient of the layer whose output gradient a is).
    /// Returns false, doing nothing, where the kernel does not apply (not sm_90, not bf16, K or N not a multiple of
    /// 8, a small output), so the caller falls back to cuBLASLt.
    func hopperMatmul(_ a: Tensor, _ b: Tensor, transposeB: Bool, into c: Tensor, epilogue: Epilogue,
                      columnSums: Tensor? = nil) -> Bool {
        guard usesHopperMatmul, a.dtype == .bf16, b.dtype == .bf16, c.dtype == .bf16, a.rank == 2, b.rank == 2,
              let encode = driver.cuTensorMapEncodeTiled else { return false }
        let (m, k) = (a.shape[0], a.shape[1])
        let n = transposeB ? b.shape[0] : b.shape[1]
        guard (transposeB ? b.shape[1] : b.shape[0]) == k, c.shape == [m, n], m > 0, n > 0, k > 0,
              k % 8 == 0, n % 8 == 0, m * n >= hopperMatmulMinimumOutputs,
              [a, b, c].allSatisfy({ deviceAddress($0) % 16 == 0 }) else { return false }
        let kind: String, bias: Tensor?, aux: Tensor?
        switch (epilogue, transposeB) {
        case (.none, true): (kind, bias, aux) = ("nt", nil, nil)
        case (.bias(let vector), true): (kind, bias, aux) = ("nt_bias", vector, nil)
        case (.geluAux(let vector?, let kept), true): (kind, bias, aux) = ("nt_gelu", vector, kept)
        case (.none, false): (kind, bias, aux) = ("nn", nil, nil)
        case (.dGELU(let kept), false): (kind, bias, aux) = ("nn_dgelu", nil, kept)
        default: return false
        }
        guard bias.map({ $0.dtype == .bf16 && $0.count == n && deviceAddress($0) % 4 == 0 }) ?? true,
              aux.map({ $0.dtype == .bf16 && $0.count == m * n && deviceAddress($0) % 16 == 0 }) ?? true,
              columnSums.map({ !transposeB && $0.dtype == .f32 && $0.count == k }) ?? true else { return false }
        // A: [M, K] in boxes of 128 rows × 64. B: each CTA of a cluster loads half of a 192 × 64 tile, [N, K] in
        // boxes of 96 rows × 64, or [K, N] in boxes of 32 × 64 (three side by side make 192 columns). The output
        // (and the dGELU's aux): boxes of 64 × 64.
        let mapA = tensorMap(a, encode, rows: m, columns: k, boxRows: 128)
        let mapB = transposeB ? tensorMap(b, encode, rows: n, columns: k, boxRows: 96)
                              : tensorMap(b, encode, rows: k, columns: n, boxRows: 32)
        let mapC = tensorMap(c, encode, rows: m, columns: n, boxRows: 64)
        let mapAux = aux.map { tensorMap($0, encode, rows: m, columns: n, boxRows: 64) } ?? mapC
        // Clusters take pairs of 128-row tiles; the column sums come as 8 partial rows a tile (16 rows each).
        let pairs = (m + 255) / 256, partials = columnSums.map { _ in empty([pairs * 2 * 8, k], dtype: .f32) }
        retainForConcurrentWork(a, b, c, aux, bias)  // passed as TMA descriptors, not as tensors
        launch("hopper_matmul_\(kind)", in: "HopperMatmul", element: .bf16,
               grid: (Swift.min(pairs * ((n + 191) / 192), multiprocessors / 2) * 2, 1, 1), block: (384, 1, 1),
               sharedMemoryBytes: Self.hopperSharedBytes,
               [mapA, mapB, mapC, mapAux, argument(bias), argument(partials), Int64(m), Int32(n), Int32(k)])
        if let partials, let columnSums { self.columnSums(partials, into: columnSums, rows: pairs * 16, width: k) }
        return true
    }

    /// The TMA descriptor of a row-major bf16 matrix read in boxes of `boxRows` × 64 columns, 128-byte swizzled
    /// (the layout wgmma reads without bank conflicts), zeros past its edges.
    private func tensorMap(_ tensor: Tensor, _ encode: CUDADriver.TensorMapEncoder, rows: Int, columns: Int,
                           boxRows: Int) -> TensorMap {
        var map = TensorMap()
        let dimensions: [UInt64] = [UInt64(columns), UInt64(rows)], strides: [UInt64] = [UInt64(columns * 2)]
        let box: [UInt32] = [64, UInt32(boxRows)], elementStrides: [UInt32] = [1, 1]
        // CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 = 9, no interleave, CU_TENSOR_MAP_SWIZZLE_128B = 3,
        // CU_TENSOR_MAP_L2_PROMOTION_L2_256B = 3, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE = 0 (zeros).
        let result = withUnsafeMutableBytes(of: &map) {
            encode($0.baseAddress!, 9, 2, tensor.address, dimensions, strides, box, elementStrides, 0, 3, 3, 0)
        }
        check(result, "cuTensorMapEncodeTiled(\(rows) × \(columns), box \(boxRows) × 64)")
        return map
    }
}
