import Foundation
import KinemaTensor

/// The GPU backend, reached only through dlopen: the driver API for memory and launches, NVRTC for the kernels in
/// `Kernels/*.cu` (compiled for the device's architecture on first use and cached on disk).
///
/// Every op family runs on f32 and on bf16 activations (computed in f32; every float dtype for storage and casts):
/// memory, elementwise, linear algebra (cuBLASLt, with epilogues), NN (LayerNorm fused with adaLN modulation),
/// attention (exact in f32, flash attention on the tensor cores in bf16), the fused optimizer over the parameter
/// arena, random, diffusion losses (f32: a model's outputs are f32 at its interface).
public final class CUDABackend: @unchecked Sendable {
    public let device: Device
    public let deviceName: String
    /// Compute capability as one number, e.g. 90 for sm_90.
    public let architecture: Int
    /// Streaming multiprocessors: a persistent kernel's grid.
    let multiprocessors: Int
    let driver: CUDADriver
    let compiler: NVRTC
    let allocator: DeviceAllocator
    /// Loaded kernels by (name, file, element type): looked up on every launch, so no string is built for it.
    private var functions: [KernelKey: UnsafeMutableRawPointer] = [:]
    /// One launch's argument values, packed in 8-byte slots, and the pointers to them that cuLaunchKernel reads
    /// (it copies the values before it returns, so the next launch can reuse both).
    private let argumentScratch = UnsafeMutableRawPointer.allocate(byteCount: 64 * 32, alignment: 16)
    private let argumentPointers = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 64)
    /// cuLaunchKernelEx's CUlaunchConfig (56 bytes, cuda.h's layout) and at byte 64 its one CUlaunchAttribute
    /// (72 bytes): programmatic stream serialization, which lets a kernel start while the one before it on the
    /// stream finishes (Common.cuh's GRID_DEPENDENCY). The attribute is written once, in init; each launch writes
    /// its grid, block, shared bytes and stream.
    private let launchConfig = UnsafeMutableRawPointer.allocate(byteCount: 64 + 72, alignment: 16)
    /// Whether kernels are launched with programmatic dependent launch: on sm_90 and later where the driver has
    /// cuLaunchKernelEx, unless KINEMA_DEPENDENT_LAUNCH=0 (for A/B timings).
    public lazy var launchesDependently = architecture >= 90 && driver.cuLaunchKernelEx != nil
        && ProcessInfo.processInfo.environment["KINEMA_DEPENDENT_LAUNCH"] != "0"
    /// Whether bf16 products of linear layers run on Kinema's own Hopper kernel (Kernels/HopperMatmul.cu) where it
    /// applies: on sm_90 with a driver that encodes TMA descriptors, when KINEMA_HOPPER_MATMUL=1. Off by default:
    /// the DiT-XL/2 step is no faster with it. In a kernel timeline of the plain step its products take what
    /// cuBLASLt's and the column sums take, but the LayerNorm backward after its input-gradient product takes
    /// 12.6 µs a launch longer than after cuBLASLt's (BENCHMARKS.md, twelfth session).
    public lazy var usesHopperMatmul = supportsHopperMatmul
        && ProcessInfo.processInfo.environment["KINEMA_HOPPER_MATMUL"] == "1"
    /// Whether the Hopper kernel can run here at all (what the GPU checks turn on to test it).
    public var supportsHopperMatmul: Bool { architecture == 90 && driver.cuTensorMapEncodeTiled != nil }
    /// Products with fewer output elements stay on cuBLASLt: below about half a wave of 128 × 192 tiles the
    /// persistent kernel leaves SMs idle (the adaLN products, 64 rows). The GPU checks lower it to reach small shapes.
    public var hopperMatmulMinimumOutputs = 128 * 192 * 64
    /// Whether flash attention's dK/dV runs on the wgmma kernel (Kernels/FlashAttention.cu) where it applies (sm_90,
    /// head dims a multiple of 8, 16-byte aligned rows), when KINEMA_HOPPER_ATTENTION=1. Off by default: at DiT-XL/2's
    /// shapes it is slower than the mma.sync kernel (0.34 against 0.26 ms; BENCHMARKS.md, thirteenth session),
    /// its per-thread tile loads and its dSᵀ stores costing more than its products save.
    public lazy var usesHopperAttention = architecture == 90
        && ProcessInfo.processInfo.environment["KINEMA_HOPPER_ATTENTION"] == "1"
    /// Blocks the GPU holds at once, per row kernel and block size (CUDABackend+NN's residentBlocks).
    var residency: [ResidencyKey: Int] = [:]
    /// The dynamic shared memory each function has been allowed beyond the default 48 KiB.
    private var sharedMemoryLimits: [UnsafeMutableRawPointer: Int] = [:]
    /// cuBLASLt and its handle, opened on the first matrix product.
    private var cublasLibrary: CuBLASLt?
    private(set) var cublasHandle: UnsafeMutableRawPointer?
    /// The main stream's cuBLASLt workspace and reduction counters (the second stream has its own).
    private let mainScratch = StreamScratch()
    /// Where the embedding kernels record the first index outside a table they meet, i32 [set, op, position, index,
    /// rows] (zero until one does), and whether a kernel may have written it since the host last read it.
    private var indexErrorWords: Tensor?
    private var indexErrorsUnread = false
    /// cuBLASLt descriptors and the chosen algorithm per product shape, made once (see CUDABackend+LinearAlgebra).
    var matmulPlans: [MatmulKey: MatmulPlan] = [:]
    /// Whether a bf16 product's plan times the heuristic's candidates at its first use and keeps the fastest (on
    /// unless KINEMA_MATMUL_AUTOTUNE=0). Off, every run uses the heuristic's favourite: bit-identical from process to
    /// process; on, two processes may pick different algorithms and round differently.
    public var autotunesMatmuls = ProcessInfo.processInfo.environment["KINEMA_MATMUL_AUTOTUNE"] != "0"
    /// The most bytes the flash backward may hold for the scores' gradient dSᵀ (bf16, B·H·Nk·Nq rounded up to 64s):
    /// within it the short-sequence backward stores dSᵀ rather than rebuilding S, P and dP for dQ (DiT-XL/2 at
    /// 256 px needs 134 MB). 0 always takes the two-kernel backward (KINEMA_SCORE_GRADIENT_BUDGET=0 sets that, for
    /// A/B timings of the two).
    public var scoreGradientBudget = Int(ProcessInfo.processInfo.environment["KINEMA_SCORE_GRADIENT_BUDGET"] ?? "")
        ?? 512 << 20
    /// Seconds the host has spent waiting for the stream (downloads, synchronize): host time minus this is what
    /// the CPU itself spends queueing work.
    public private(set) var hostWaitSeconds = 0.0
    /// Set to time every launch and product by name (see KernelProfiler); nil in normal runs.
    public var profiler: KernelProfiler?
    private var modules: [String: UnsafeMutableRawPointer] = [:]
    /// The stream kernels, copies and matrix products are queued on now: `mainStream`, or the concurrent stream
    /// while `concurrently` queues its work (CUDABackend+Concurrency).
    var stream: UnsafeMutableRawPointer?
    /// The backend's own stream: non-blocking, created in init, so work is ordered on it alone (host reads wait on it
    /// with cuStreamSynchronize, after it has been made to wait for any concurrent work). Where the driver offers
    /// stream priorities it has the highest: it carries the step's critical path.
    private(set) var mainStream: UnsafeMutableRawPointer?
    /// The second stream and its queued batches (nil until `concurrently` first needs it).
    var concurrent: ConcurrentStream?
    /// Whether `concurrently` queues its work on the second stream (off with KINEMA_CONCURRENT_GRADIENTS=0, for A/B
    /// timings; off, it runs the work in order on the main stream).
    public var runsConcurrently = ProcessInfo.processInfo.environment["KINEMA_CONCURRENT_GRADIENTS"] != "0"

    /// Opens `cuda:index`. Throws a clear error when the driver, NVRTC or the device is missing.
    public init(index: Int = 0, cacheDirectory: URL? = nil) throws {
        driver = try CUDADriver()
        try driver.check(driver.cuInit(0), "cuInit")
        var count: Int32 = 0
        try driver.check(driver.cuDeviceGetCount(&count), "cuDeviceGetCount")
        guard index >= 0 && index < Int(count) else { throw CUDAError.noDevice(requested: index, available: Int(count)) }
        var handle: Int32 = 0
        try driver.check(driver.cuDeviceGet(&handle, Int32(index)), "cuDeviceGet")
        var name = [CChar](repeating: 0, count: 256)
        try driver.check(driver.cuDeviceGetName(&name, 256, handle), "cuDeviceGetName")
        deviceName = String(cString: name)
        var major: Int32 = 0, minor: Int32 = 0
        try driver.check(driver.cuDeviceGetAttribute(&major, 75, handle), "cuDeviceGetAttribute(major)")
        try driver.check(driver.cuDeviceGetAttribute(&minor, 76, handle), "cuDeviceGetAttribute(minor)")
        architecture = Int(major * 10 + minor)
        var smCount: Int32 = 0
        try driver.check(driver.cuDeviceGetAttribute(&smCount, 16, handle), "cuDeviceGetAttribute(multiprocessors)")
        multiprocessors = Int(smCount)
        var context: UnsafeMutableRawPointer?
        try driver.check(driver.cuDevicePrimaryCtxRetain(&context, handle), "cuDevicePrimaryCtxRetain")
        try driver.check(driver.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        stream = try Self.createStream(driver, highestPriority: true)
        mainStream = stream
        let cache = cacheDirectory ?? FileManager.default.homeDirectoryForCurrentUser
            .appendingPathComponent(".cache/kinema/kernels")
        compiler = try NVRTC(cacheDirectory: cache)
        allocator = DeviceAllocator(driver: driver)
        device = .cuda(index)
        prepareLaunchConfig()
    }

    deinit {
        argumentScratch.deallocate()
        argumentPointers.deallocate()
        launchConfig.deallocate()
    }

    public var name: String { "\(device) \(deviceName) (sm_\(architecture))" }

    /// Fill every new float tensor with NaN, so a kernel that leaves an element unwritten fails its check
    /// (on in debug builds and in kinema-gpu-check; it costs a launch per allocation).
    public var poisonsNewTensors: Bool = {
        #if DEBUG
        return true
        #else
        return false
        #endif
    }()

    /// Bytes held by live tensors now, and the most held at once.
    public var memoryInUse: Int { allocator.currentBytes }
    public var peakMemory: Int { allocator.peakBytes }
    /// How many times the allocator had to ask the driver for memory (constant once a loop is warm).
    public var deviceAllocationCount: Int { allocator.deviceAllocations }

    /// The kernel `name` of `Kernels/<file>.cu` built for activations of `element` type (f32 or bf16: the file is
    /// compiled once per element type, see Common.cuh), compiled and loaded on first use.
    func kernel(_ name: String, in file: String, element: DType = .f32) throws -> UnsafeMutableRawPointer {
        let functionKey = KernelKey(name: name, file: file, element: element)
        if let function = functions[functionKey] { return function }
        let moduleKey = "\(file)/\(element)"
        if modules[moduleKey] == nil {
            let cubin = try compiler.cubin(source: Self.source(of: file), name: file, architecture: architecture,
                                           options: Self.compileOptions(element: element))
            var module: UnsafeMutableRawPointer?
            try cubin.withUnsafeBytes { try driver.check(driver.cuModuleLoadData(&module, $0.baseAddress!), "cuModuleLoadData") }
            modules[moduleKey] = module
        }
        var function: UnsafeMutableRawPointer?
        try driver.check(driver.cuModuleGetFunction(&function, modules[moduleKey]!, name), "cuModuleGetFunction(\(name))")
        functions[functionKey] = function
        return function!
    }

    /// The element types kernels are built for, and the NVRTC options that select one.
    static let elementTypes: [DType] = [.f32, .bf16]
    static func compileOptions(element: DType) -> [String] {
        precondition(elementTypes.contains(element), "CUDA kernels take f32 or bf16 activations, not \(element)")
        return element == .bf16 ? ["-DELEMENT_BF16"] : []
    }

    /// The names of the kernel files (`Kernels/*.cu`) in the bundle.
    static var kernelFiles: [String] {
        let folder = Bundle.module.resourceURL?.appendingPathComponent("Kernels")
        let names = folder.flatMap { try? FileManager.default.contentsOfDirectory(atPath: $0.path) } ?? []
        return names.filter { $0.hasSuffix(".cu") }.map { String($0.dropLast(3)) }.sorted()
    }

    /// What NVRTC compiles for `Kernels/<file>.cu`: Common.cuh (grid loops, integer types, the block reduction) in
    /// front of the file, and Hopper.cuh (mbarriers, TMA, wgmma) for the files built for sm_90a where it applies.
    static func source(of file: String) throws -> String {
        let headers = NVRTC.architectureSpecific.contains(file) ? ["Common", "Hopper"] : ["Common"]
        return try (headers.map { try kernelSource($0, extension: "cuh") } + [kernelSource(file, extension: "cu")])
            .joined(separator: "\n")
    }

    /// Compiles every kernel file for `sm_<architecture>` without a GPU (NVRTC alone): catches a kernel that does not
    /// build before any device time is spent. Returns the failures by file (empty when all compile).
    public static func compileAllKernels(architecture: Int = 90, cacheDirectory: URL) throws -> [(file: String, log: String)] {
        let compiler = try NVRTC(cacheDirectory: cacheDirectory)
        return kernelFiles.flatMap { file in
            elementTypes.compactMap { element in
                do {
                    _ = try compiler.cubin(source: source(of: file), name: file, architecture: architecture,
                                           options: compileOptions(element: element))
                    return nil
                } catch {
                    return ("\(file) (\(element))", "\(error)")
                }
            }
        }
    }

    /// ptxas's report for one kernel file, each element type: registers, spill bytes and shared memory per kernel,
    /// to tune occupancy without a GPU (`kinema-gpu-check --resources FILE`). It compiles past the disk cache (the
    /// cache would hold no log), so the directory the compiler is given is never touched.
    public static func kernelResources(file: String, architecture: Int = 90) throws -> String {
        let compiler = try NVRTC(cacheDirectory: FileManager.default.temporaryDirectory)
        return try elementTypes.map { element in
            let options = NVRTC.options(architecture: architecture, name: file,
                                        compileOptions(element: element) + ["--ptxas-options=-v"])
            let log = try compiler.compile(source: source(of: file), name: file, options: options).log
            return "== \(file) (\(element))\n\(log)"
        }.joined(separator: "\n")
    }

    private static func kernelSource(_ name: String, extension fileExtension: String) throws -> String {
        guard let url = Bundle.module.url(forResource: name, withExtension: fileExtension, subdirectory: "Kernels"),
              let source = try? String(contentsOf: url, encoding: .utf8) else {
            throw CUDAError.compilation(kernel: name, log: "kernel source \(name).\(fileExtension) is missing from the bundle")
        }
        return source
    }

    /// Launches a 1-D grid over `count` elements (grid-stride kernels) with the given argument values.
    func launch(_ name: String, in file: String = "Elementwise", element: DType = .f32, count: Int, blocks: Int? = nil,
                threads: Int = 256, _ arguments: [any KernelArgument]) {
        let grid = blocks ?? Swift.max(1, Swift.min((count + threads - 1) / threads, 65_535 * 8))
        launch(name, in: file, element: element, grid: (grid, 1, 1), block: (threads, 1, 1), arguments)
    }

    /// Launches `name` on a grid of blocks with `sharedMemoryBytes` of dynamic shared memory.
    func launch(_ name: String, in file: String, element: DType = .f32, grid: (Int, Int, Int), block: (Int, Int, Int),
                sharedMemoryBytes: Int = 0, _ arguments: [any KernelArgument]) {
        do {
            let function = try kernel(name, in: file, element: element)
            if sharedMemoryBytes > 48 << 10 && sharedMemoryLimits[function, default: 0] < sharedMemoryBytes {
                // Above 48 KiB a kernel must opt in (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8).
                try driver.check(driver.cuFuncSetAttribute(function, 8, Int32(sharedMemoryBytes)),
                                 "cuFuncSetAttribute(\(name), max dynamic shared memory \(sharedMemoryBytes))")
                sharedMemoryLimits[function] = sharedMemoryBytes
            }
            // The host cost of a launch is what keeps a GPU fed through ~1400 launches a step: no allocation here.
            precondition(arguments.count <= 64, "\(name): more than 64 kernel arguments")
            if let concurrent, concurrent.isQueueing {
                for case let tensor as Tensor in arguments { concurrent.retain(tensor) }
            }
            var offset = 0
            for (index, argument) in arguments.enumerated() {
                let slot = argumentScratch + offset
                offset += (argument.store(at: slot) + 7) & ~7
                precondition(offset <= 64 * 32, "\(name): kernel arguments exceed the scratch space")
                argumentPointers[index] = slot
            }
            var result: Int32 = 0
            profiled(name, host: \.launchSeconds) {
                if launchesDependently, let launchEx = driver.cuLaunchKernelEx {
                    fillLaunchConfig(grid: grid, block: block, sharedMemoryBytes: sharedMemoryBytes)
                    result = launchEx(launchConfig, function, argumentPointers, nil)
                } else {
                    result = driver.cuLaunchKernel(function, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2),
                                                   UInt32(block.0), UInt32(block.1), UInt32(block.2),
                                                   UInt32(sharedMemoryBytes), stream, argumentPointers, nil)
                }
            }
            try driver.check(result, "cuLaunchKernel(\(name))")
        } catch {
            fatalError("\(error)")
        }
    }

    /// CUlaunchConfig { grid xyz, block xyz, shared bytes (u32 each), stream at 32, attributes at 40, count at 48 }
    /// pointing at one CUlaunchAttribute { id (u32, padded to 8), value (a 64-byte union) }:
    /// CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION (6) with programmaticStreamSerializationAllowed = 1.
    private func prepareLaunchConfig() {
        launchConfig.initializeMemory(as: UInt8.self, repeating: 0, count: 64 + 72)
        let attribute = launchConfig + 64
        launchConfig.storeBytes(of: attribute, toByteOffset: 40, as: UnsafeMutableRawPointer.self)
        launchConfig.storeBytes(of: UInt32(1), toByteOffset: 48, as: UInt32.self)
        attribute.storeBytes(of: UInt32(6), toByteOffset: 0, as: UInt32.self)
        attribute.storeBytes(of: Int32(1), toByteOffset: 8, as: Int32.self)
    }

    /// A launch's own fields of the CUlaunchConfig: grid, block, dynamic shared bytes and the stream it goes to now
    /// (stored one by one: no array on the launch path).
    private func fillLaunchConfig(grid: (Int, Int, Int), block: (Int, Int, Int), sharedMemoryBytes: Int) {
        let store = { (value: Int, offset: Int) in
            self.launchConfig.storeBytes(of: UInt32(value), toByteOffset: offset, as: UInt32.self)
        }
        store(grid.0, 0); store(grid.1, 4); store(grid.2, 8)
        store(block.0, 12); store(block.1, 16); store(block.2, 20)
        store(sharedMemoryBytes, 24)
        launchConfig.storeBytes(of: stream, toByteOffset: 32, as: UnsafeMutableRawPointer?.self)
    }

    /// Runs `body` (which queues work on the stream). When profiling, its device time is filed under `name` and the
    /// host time of the call itself is added to the profiler's counter `host`; otherwise nothing is measured.
    func profiled(_ name: @autoclosure () -> String, host: ReferenceWritableKeyPath<KernelProfiler, HostTime>,
                  _ body: () throws -> Void) rethrows {
        guard let profiler else { return try body() }
        try profiler.measure(name(), stream: stream) {
            let start = DispatchTime.now().uptimeNanoseconds
            try body()
            profiler[keyPath: host].seconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            profiler[keyPath: host].calls += 1
        }
    }

    /// Starts recording per-kernel times (see KernelProfiler).
    public func startProfiling() { profiler = KernelProfiler(driver: driver) }

    func cublas() throws -> CuBLASLt {
        if let cublasLibrary { return cublasLibrary }
        let library = try CuBLASLt()
        try library.check(library.create(&cublasHandle), "cublasLtCreate")
        cublasLibrary = library
        return library
    }

    /// The scratch of the stream work is queued on now.
    private var scratch: StreamScratch {
        if let concurrent, concurrent.isQueueing { return concurrent.scratch }
        return mainScratch
    }

    /// 32 MiB for cuBLASLt's split-K and stream-K algorithms, allocated once for each stream.
    func matmulWorkspace() throws -> Tensor {
        let scratch = self.scratch
        if let workspace = scratch.workspace { return workspace }
        let tensor = empty([8 << 20], dtype: .i32)
        scratch.workspace = tensor
        return tensor
    }

    /// At least `count` zero counters for last_block (one per group of blocks that finishes a reduction), allocated
    /// once for each stream and grown when a launch needs more.
    func reductionCounters(_ count: Int) -> Tensor {
        let scratch = self.scratch
        if let counters = scratch.counters, counters.count >= count { return counters }
        let tensor = empty([Swift.max(count, 4096)], dtype: .i32)
        fill(tensor, with: 0)
        scratch.counters = tensor
        return tensor
    }

    /// Waits for everything queued on the backend's streams; stops with the message of an index outside a table
    /// that an embedding kernel met (`takeIndexError`).
    public func synchronize() {
        awaitConcurrentWork()
        let start = DispatchTime.now().uptimeNanoseconds
        do { try driver.check(driver.cuStreamSynchronize(stream), "cuStreamSynchronize") } catch { fatalError("\(error)") }
        hostWaitSeconds += Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        // fatalError: it prints its message in a release build, where a failed precondition only traps.
        if let message = takeIndexError() { fatalError(message) }
    }

    /// The error record the embedding kernels write to (CUDABackend+NN), zeroed once.
    func indexErrors() -> Tensor {
        indexErrorsUnread = true
        if let indexErrorWords { return indexErrorWords }
        let words = empty([5], dtype: .i32)
        fill(words, with: 0)
        indexErrorWords = words
        return words
    }

    /// The first index outside a table an embedding kernel has met since the last call, as the message the CPU
    /// backend stops with, and the record cleared; nil when there was none. Read only after a kernel that checks
    /// indices has been queued (a host read then costs no extra copy otherwise).
    public func takeIndexError() -> String? {
        guard indexErrorsUnread, let words = indexErrorWords else { return nil }
        indexErrorsUnread = false
        let record = downloadBytes(words).withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
        guard record[0] != 0 else { return nil }
        fill(words, with: 0)
        return "\(record[1] == 0 ? "embedding" : "embeddingBackward"): index \(record[3]) at position \(record[2]) is "
            + "outside the table's \(record[4]) rows (found by the GPU kernel, reported at the next host read)"
    }
}

/// A kernel and block size whose occupancy the backend has asked the driver for.
struct ResidencyKey: Hashable {
    let name: String
    let element: DType
    let threads: Int
}

/// Which loaded kernel: its name, its file and the element type the file was built for.
struct KernelKey: Hashable {
    let name: String
    let file: String
    let element: DType
}

/// A value passed to a kernel by value.
protocol KernelArgument {
    /// Writes the value's bytes at `address` (8-byte aligned) and returns their count.
    func store(at address: UnsafeMutableRawPointer) -> Int
}

extension KernelArgument {
    func store(at address: UnsafeMutableRawPointer) -> Int {
        withUnsafeBytes(of: self) { address.copyMemory(from: $0.baseAddress!, byteCount: $0.count); return $0.count }
    }
}

extension Int32: KernelArgument {}
extension Int64: KernelArgument {}
extension UInt16: KernelArgument {}
extension UInt32: KernelArgument {}
extension UInt64: KernelArgument {}
extension Float: KernelArgument {}
extension Double: KernelArgument {}

extension Tensor: KernelArgument {
    /// A tensor passes its device address.
    func store(at address: UnsafeMutableRawPointer) -> Int {
        address.storeBytes(of: UInt64(UInt(bitPattern: self.address)), as: UInt64.self)
        return 8
    }
}

/// With every op family in place the CUDA backend runs anything the CPU backend runs, and bf16 besides.
extension CUDABackend: Backend {}
