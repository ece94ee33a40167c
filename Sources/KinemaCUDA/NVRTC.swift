import Foundation

/// Run-time compilation of CUDA C to device code (cubin) for the GPU's architecture, cached on disk by a hash of
/// source, options and architecture, so a kernel is compiled once per machine.
final class NVRTC: @unchecked Sendable {
    typealias Program = UnsafeMutableRawPointer
    let library: DynamicLibrary
    let nvrtcCreateProgram: @convention(c) (UnsafeMutablePointer<Program?>, UnsafePointer<CChar>, UnsafePointer<CChar>,
                                            Int32, UnsafePointer<UnsafePointer<CChar>?>?,
                                            UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    let nvrtcCompileProgram: @convention(c) (Program, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    let nvrtcGetProgramLogSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Int32
    let nvrtcGetProgramLog: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Int32
    let nvrtcGetCUBINSize: @convention(c) (Program, UnsafeMutablePointer<Int>) -> Int32
    let nvrtcGetCUBIN: @convention(c) (Program, UnsafeMutablePointer<CChar>) -> Int32
    let nvrtcDestroyProgram: @convention(c) (UnsafeMutablePointer<Program?>) -> Int32
    let cacheDirectory: URL

    init(cacheDirectory: URL) throws {
        library = try DynamicLibrary(candidates: ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
                                     purpose: "NVRTC, the CUDA run-time compiler")
        nvrtcCreateProgram = try library.function("nvrtcCreateProgram")
        nvrtcCompileProgram = try library.function("nvrtcCompileProgram")
        nvrtcGetProgramLogSize = try library.function("nvrtcGetProgramLogSize")
        nvrtcGetProgramLog = try library.function("nvrtcGetProgramLog")
        nvrtcGetCUBINSize = try library.function("nvrtcGetCUBINSize")
        nvrtcGetCUBIN = try library.function("nvrtcGetCUBIN")
        nvrtcDestroyProgram = try library.function("nvrtcDestroyProgram")
        self.cacheDirectory = cacheDirectory
    }

    /// The cubin of `source` for `sm_<architecture>`, from the disk cache or freshly compiled (and then cached).
    func cubin(source: String, name: String, architecture: Int, options extra: [String] = []) throws -> [UInt8] {
        let options = Self.options(architecture: architecture, name: name, extra)
        let key = Self.fnv1a(source + "\u{0}" + options.joined(separator: " ") + "\u{0}\(architecture)")
        let cached = cacheDirectory.appendingPathComponent("\(name)-sm\(architecture)-\(String(key, radix: 16)).cubin")
        if let data = FileManager.default.contents(atPath: cached.path) { return [UInt8](data) }

        let cubin = try compile(source: source, name: name, options: options).cubin
        // A cache that cannot be written only costs a recompilation next time.
        try? FileManager.default.createDirectory(at: cacheDirectory, withIntermediateDirectories: true)
        let temporary = cached.appendingPathExtension("tmp-\(getpid())")
        if FileManager.default.createFile(atPath: temporary.path, contents: Data(cubin)) {
            rename(temporary.path, cached.path)  // atomic: a reader sees the old state or the whole file
        }
        return cubin
    }

    /// Kernel files built for the architecture-specific target sm_90a on sm_90 (H100, H200): the Hopper products'
    /// and flash attention's wgmma and TMA instructions exist only there. Every other file keeps the portable target.
    static let architectureSpecific: Set<String> = ["HopperMatmul", "FlashAttention"]

    static func options(architecture: Int, name: String, _ extra: [String]) -> [String] {
        let target = architecture == 90 && architectureSpecific.contains(name) ? "sm_90a" : "sm_\(architecture)"
        return ["--gpu-architecture=\(target)", "--std=c++17", "-default-device"] + extra
    }

    /// Compiles without the cache; returns the cubin and NVRTC's log (ptxas's register and spill report under
    /// `--ptxas-options=-v`).
    func compile(source: String, name: String, options: [String]) throws -> (cubin: [UInt8], log: String) {
        var program: Program?
        try check(nvrtcCreateProgram(&program, source, name, 0, nil, nil), name, program)
        defer { _ = nvrtcDestroyProgram(&program) }
        let cOptions = options.map { strdup($0) }
        defer { cOptions.forEach { free($0) } }
        var pointers = cOptions.map { UnsafePointer<CChar>($0) }
        let compiled = pointers.withUnsafeMutableBufferPointer {
            nvrtcCompileProgram(program!, Int32(options.count), $0.baseAddress)
        }
        guard compiled == 0 else { throw CUDAError.compilation(kernel: name, log: log(program!)) }
        var size = 0
        _ = nvrtcGetCUBINSize(program!, &size)
        var bytes = [CChar](repeating: 0, count: size)
        _ = nvrtcGetCUBIN(program!, &bytes)
        return (bytes.map { UInt8(bitPattern: $0) }, log(program!))
    }

    private func log(_ program: Program) -> String {
        var size = 0
        _ = nvrtcGetProgramLogSize(program, &size)
        var text = [CChar](repeating: 0, count: max(size, 1))
        _ = nvrtcGetProgramLog(program, &text)
        return String(cString: text)
    }

    private func check(_ result: Int32, _ name: String, _ program: Program?) throws {
        guard result != 0 else { return }
        throw CUDAError.compilation(kernel: name, log: "NVRTC error \(result)")
    }

    /// 64-bit FNV-1a: a stable cache key (Swift's Hasher is seeded per process).
    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }
}
