import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A shared library opened at run time, so Kinema builds and runs its CPU paths on machines without CUDA.
final class DynamicLibrary: @unchecked Sendable {
    let name: String
    private let handle: UnsafeMutableRawPointer

    /// Opens the first of `candidates` that loads (e.g. "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so").
    init(candidates: [String], purpose: String) throws {
        var reasons: [String] = []
        for candidate in candidates {
            if let handle = dlopen(candidate, RTLD_NOW | RTLD_LOCAL) {
                self.name = candidate
                self.handle = handle
                return
            }
            reasons.append(String(cString: dlerror()))
        }
        throw CUDAError.libraryMissing(library: candidates.joined(separator: " / "), purpose: purpose,
                                       reason: reasons.last ?? "not found")
    }

    /// The symbol `symbol` as a C function of type `T`.
    func function<T>(_ symbol: String, as _: T.Type = T.self) throws -> T {
        guard let address = dlsym(handle, symbol) else {
            throw CUDAError.symbolMissing(library: name, symbol: symbol)
        }
        return unsafeBitCast(address, to: T.self)
    }
}

/// What can go wrong reaching a GPU, with what to do about it.
public enum CUDAError: Error, CustomStringConvertible {
    case libraryMissing(library: String, purpose: String, reason: String)
    case symbolMissing(library: String, symbol: String)
    case noDevice(requested: Int, available: Int)
    case call(function: String, code: Int32, message: String)
    case compilation(kernel: String, log: String)

    public var description: String {
        switch self {
        case .libraryMissing(let library, let purpose, let reason):
            return "cannot load \(library) (\(purpose)): \(reason). Install the NVIDIA driver / CUDA toolkit "
                + "libraries, or use --device cpu"
        case .symbolMissing(let library, let symbol):
            return "\(library) has no \(symbol): the CUDA installation is too old for Kinema"
        case .noDevice(let requested, let available):
            return "no CUDA device \(requested): this machine has \(available); use --device cpu or cuda:0…"
        case .call(let function, let code, let message):
            return "\(function) failed with CUDA error \(code): \(message)"
        case .compilation(let kernel, let log):
            return "NVRTC could not compile \(kernel):\n\(log)"
        }
    }
}
