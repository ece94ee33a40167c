/// The CUDA driver API functions Kinema calls, looked up in libcuda.so.1. Handles are opaque pointers and device
/// addresses 64-bit integers, as in cuda.h.
final class CUDADriver: @unchecked Sendable {
    typealias Handle = UnsafeMutableRawPointer
    let library: DynamicLibrary

    let cuInit: @convention(c) (UInt32) -> Int32
    let cuDeviceGetCount: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    let cuDeviceGet: @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
    let cuDeviceGetName: @convention(c) (UnsafeMutablePointer<CChar>, Int32, Int32) -> Int32
    let cuDeviceGetAttribute: @convention(c) (UnsafeMutablePointer<Int32>, Int32, Int32) -> Int32
    let cuDevicePrimaryCtxRetain: @convention(c) (UnsafeMutablePointer<Handle?>, Int32) -> Int32
    let cuCtxSetCurrent: @convention(c) (Handle?) -> Int32
    let cuCtxSynchronize: @convention(c) () -> Int32
    let cuMemAlloc: @convention(c) (UnsafeMutablePointer<UInt64>, Int) -> Int32
    let cuMemFree: @convention(c) (UInt64) -> Int32
    let cuMemGetInfo: @convention(c) (UnsafeMutablePointer<Int>, UnsafeMutablePointer<Int>) -> Int32
    // Streams, stream-ordered copies and events (cuda.h: CUstream and CUevent are opaque pointers, size_t is Int).
    // Only the Async copies are loaded: a synchronous cuMemcpy runs on the legacy default stream, which the
    // backend's non-blocking stream does not wait for.
    let cuStreamCreate: @convention(c) (UnsafeMutablePointer<Handle?>, UInt32) -> Int32
    let cuStreamSynchronize: @convention(c) (Handle?) -> Int32
    /// cuStreamWaitEvent(stream, event, flags): work queued on the stream after it waits for the event's work.
    let cuStreamWaitEvent: @convention(c) (Handle?, Handle, UInt32) -> Int32
    /// cuStreamCreateWithPriority(stream, flags, priority) and cuCtxGetStreamPriorityRange(least, greatest): where
    /// the driver has them, the stream of a backend's critical path goes first (nil: streams of equal priority).
    let cuStreamCreateWithPriority: (@convention(c) (UnsafeMutablePointer<Handle?>, UInt32, Int32) -> Int32)?
    let cuCtxGetStreamPriorityRange: (@convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32)?
    let cuMemcpyHtoDAsync: @convention(c) (UInt64, UnsafeRawPointer, Int, Handle?) -> Int32
    let cuMemcpyDtoHAsync: @convention(c) (UnsafeMutableRawPointer, UInt64, Int, Handle?) -> Int32
    let cuMemcpyDtoDAsync: @convention(c) (UInt64, UInt64, Int, Handle?) -> Int32
    let cuEventCreate: @convention(c) (UnsafeMutablePointer<Handle?>, UInt32) -> Int32
    let cuEventRecord: @convention(c) (Handle, Handle?) -> Int32
    let cuEventSynchronize: @convention(c) (Handle) -> Int32
    let cuEventElapsedTime: @convention(c) (UnsafeMutablePointer<Float>, Handle, Handle) -> Int32
    let cuEventDestroy: @convention(c) (Handle) -> Int32
    let cuModuleLoadData: @convention(c) (UnsafeMutablePointer<Handle?>, UnsafeRawPointer) -> Int32
    let cuModuleGetFunction: @convention(c) (UnsafeMutablePointer<Handle?>, Handle, UnsafePointer<CChar>) -> Int32
    let cuLaunchKernel: @convention(c) (Handle, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, Handle?,
                                        UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                        UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32
    /// cuLaunchKernelEx(config, function, parameters, extra): a launch with attributes (CUDA 12+ drivers; nil on
    /// older ones, which then launch without them).
    let cuLaunchKernelEx: (@convention(c) (UnsafeRawPointer, Handle, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                           UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32)?
    /// cuFuncSetAttribute(function, attribute, value); Kinema sets CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
    let cuFuncSetAttribute: @convention(c) (Handle, Int32, Int32) -> Int32
    /// cuOccupancyMaxActiveBlocksPerMultiprocessor(blocks, function, blockSize, dynamicSharedBytes).
    let cuOccupancyMaxActiveBlocksPerMultiprocessor: @convention(c) (UnsafeMutablePointer<Int32>, Handle, Int32, Int) -> Int32
    let cuGetErrorString: @convention(c) (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>) -> Int32
    /// cuTensorMapEncodeTiled(map, dataType, rank, address, dims, strides, box, elementStrides, interleave, swizzle,
    /// l2Promotion, oobFill): the TMA descriptor of a tensor (CUDA 12+ drivers; nil on older ones, which then run
    /// every product on cuBLASLt).
    let cuTensorMapEncodeTiled: TensorMapEncoder?
    typealias TensorMapEncoder = @convention(c) (UnsafeMutableRawPointer, UInt32, UInt32, UnsafeMutableRawPointer?,
                                                 UnsafePointer<UInt64>, UnsafePointer<UInt64>, UnsafePointer<UInt32>,
                                                 UnsafePointer<UInt32>, UInt32, UInt32, UInt32, UInt32) -> Int32

    init() throws {
        library = try DynamicLibrary(candidates: ["libcuda.so.1", "libcuda.so"], purpose: "the CUDA driver")
        cuInit = try library.function("cuInit")
        cuDeviceGetCount = try library.function("cuDeviceGetCount")
        cuDeviceGet = try library.function("cuDeviceGet")
        cuDeviceGetName = try library.function("cuDeviceGetName")
        cuDeviceGetAttribute = try library.function("cuDeviceGetAttribute")
        cuDevicePrimaryCtxRetain = try library.function("cuDevicePrimaryCtxRetain")
        cuCtxSetCurrent = try library.function("cuCtxSetCurrent")
        cuCtxSynchronize = try library.function("cuCtxSynchronize")
        cuMemAlloc = try library.function("cuMemAlloc_v2")
        cuMemFree = try library.function("cuMemFree_v2")
        cuMemGetInfo = try library.function("cuMemGetInfo_v2")
        // Symbol names as cuda.h (CUDA 13) #defines them: _v2 where the API was versioned, the plain name otherwise
        // (the _ptsz variants are for per-thread default streams, which Kinema does not use).
        cuStreamCreate = try library.function("cuStreamCreate")
        cuStreamSynchronize = try library.function("cuStreamSynchronize")
        cuStreamWaitEvent = try library.function("cuStreamWaitEvent")
        cuStreamCreateWithPriority = try? library.function("cuStreamCreateWithPriority")
        cuCtxGetStreamPriorityRange = try? library.function("cuCtxGetStreamPriorityRange")
        cuMemcpyHtoDAsync = try library.function("cuMemcpyHtoDAsync_v2")
        cuMemcpyDtoHAsync = try library.function("cuMemcpyDtoHAsync_v2")
        cuMemcpyDtoDAsync = try library.function("cuMemcpyDtoDAsync_v2")
        cuEventCreate = try library.function("cuEventCreate")
        cuEventRecord = try library.function("cuEventRecord")
        cuEventSynchronize = try library.function("cuEventSynchronize")
        // cuda.h 12.8+ maps cuEventElapsedTime to _v2 (same signature); older drivers export only the first version.
        cuEventElapsedTime = try (try? library.function("cuEventElapsedTime_v2")) ?? library.function("cuEventElapsedTime")
        cuEventDestroy = try library.function("cuEventDestroy_v2")
        cuModuleLoadData = try library.function("cuModuleLoadData")
        cuModuleGetFunction = try library.function("cuModuleGetFunction")
        cuLaunchKernel = try library.function("cuLaunchKernel")
        cuLaunchKernelEx = try? library.function("cuLaunchKernelEx")
        cuFuncSetAttribute = try library.function("cuFuncSetAttribute")
        cuOccupancyMaxActiveBlocksPerMultiprocessor = try library.function("cuOccupancyMaxActiveBlocksPerMultiprocessor")
        cuGetErrorString = try library.function("cuGetErrorString")
        cuTensorMapEncodeTiled = try? library.function("cuTensorMapEncodeTiled")
    }

    /// CU_STREAM_NON_BLOCKING: the stream does not wait on (or hold up) the legacy default stream.
    static let streamNonBlocking: UInt32 = 1
    /// CU_EVENT_DEFAULT: an event that records timing.
    static let eventDefault: UInt32 = 0
    /// CU_EVENT_DISABLE_TIMING: an event only ordered on (cheaper to record and wait for).
    static let eventDisableTiming: UInt32 = 2

    /// Throws a CUDAError naming `function` unless `result` is CUDA_SUCCESS.
    func check(_ result: Int32, _ function: String) throws {
        guard result != 0 else { return }
        var text: UnsafePointer<CChar>?
        _ = cuGetErrorString(result, &text)
        throw CUDAError.call(function: function, code: result, message: text.map { String(cString: $0) } ?? "unknown")
    }
}
