/// The cuBLASLt entry points Kinema uses, looked up at run time. Enumeration values are those of cublasLt.h.
final class CuBLASLt: @unchecked Sendable {
    typealias Handle = UnsafeMutableRawPointer
    let library: DynamicLibrary
    let create: @convention(c) (UnsafeMutablePointer<Handle?>) -> Int32
    let matmulDescCreate: @convention(c) (UnsafeMutablePointer<Handle?>, Int32, Int32) -> Int32
    let matmulDescSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Int32
    let matmulDescDestroy: @convention(c) (Handle) -> Int32
    let layoutCreate: @convention(c) (UnsafeMutablePointer<Handle?>, Int32, UInt64, UInt64, Int64) -> Int32
    let layoutSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Int32
    let layoutDestroy: @convention(c) (Handle) -> Int32
    let preferenceCreate: @convention(c) (UnsafeMutablePointer<Handle?>) -> Int32
    let preferenceSetAttribute: @convention(c) (Handle, Int32, UnsafeRawPointer, Int) -> Int32
    let preferenceDestroy: @convention(c) (Handle) -> Int32
    /// (handle, op, A, B, C, D layouts, preference, requested count, results, returned count)
    let algoGetHeuristic: @convention(c) (Handle, Handle, Handle, Handle, Handle, Handle, Handle, Int32,
                                          UnsafeMutableRawPointer, UnsafeMutablePointer<Int32>) -> Int32
    let matmul: @convention(c) (Handle, Handle, UnsafeRawPointer, UInt64, Handle, UInt64, Handle, UnsafeRawPointer,
                                UInt64, Handle, UInt64, Handle, UnsafeRawPointer?, UInt64, Int, Handle?) -> Int32

    // cudaDataType / cublasComputeType / attribute numbers from the CUDA headers.
    static let realF32: Int32 = 0, realF64: Int32 = 1, realBF16: Int32 = 14, realF16: Int32 = 2
    static let compute32F: Int32 = 68, compute64F: Int32 = 70
    static let descTransA: Int32 = 3, descTransB: Int32 = 4, descEpilogue: Int32 = 7, descBiasPointer: Int32 = 8
    static let descAuxPointer: Int32 = 11, descAuxLeadingDimension: Int32 = 12
    static let layoutBatchCount: Int32 = 5, layoutBatchStride: Int32 = 6
    static let preferenceMaxWorkspaceBytes: Int32 = 1
    /// cublasLtEpilogue_t values.
    static let epilogueDefault: Int32 = 1, epilogueBias: Int32 = 4, epilogueGELUAuxBias: Int32 = 164
    static let epilogueGELUAux: Int32 = 160, epilogueDGELU: Int32 = 192
    /// sizeof(cublasLtMatmulHeuristicResult_t): the 64-byte algo, workspace size, status, waves, 4 reserved ints.
    static let heuristicResultSize = 96

    init() throws {
        library = try DynamicLibrary(candidates: ["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"],
                                     purpose: "cuBLASLt, for matrix products on the GPU")
        create = try library.function("cublasLtCreate")
        matmulDescCreate = try library.function("cublasLtMatmulDescCreate")
        matmulDescSetAttribute = try library.function("cublasLtMatmulDescSetAttribute")
        matmulDescDestroy = try library.function("cublasLtMatmulDescDestroy")
        layoutCreate = try library.function("cublasLtMatrixLayoutCreate")
        layoutSetAttribute = try library.function("cublasLtMatrixLayoutSetAttribute")
        layoutDestroy = try library.function("cublasLtMatrixLayoutDestroy")
        preferenceCreate = try library.function("cublasLtMatmulPreferenceCreate")
        preferenceSetAttribute = try library.function("cublasLtMatmulPreferenceSetAttribute")
        preferenceDestroy = try library.function("cublasLtMatmulPreferenceDestroy")
        algoGetHeuristic = try library.function("cublasLtMatmulAlgoGetHeuristic")
        matmul = try library.function("cublasLtMatmul")
    }

    func check(_ status: Int32, _ function: String) throws {
        guard status != 0 else { return }
        throw CUDAError.call(function: function, code: status, message: "cuBLAS status \(status)")
    }
}
