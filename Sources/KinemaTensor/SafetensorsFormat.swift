/// Pieces of the safetensors format shared by the reader and the writer: dtype names, errors, and host-side
/// conversion of raw payload bytes.
///
/// Layout of a file: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON mapping each tensor name to
/// `{"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}` (plus an optional `"__metadata__"` object of
/// string → string), then the data section; offsets are relative to the start of the data section.

extension DType {
    /// The dtype's name in a safetensors header ("F32", "BF16", …).
    public var safetensorsName: String {
        switch self {
        case .f64: return "F64"
        case .f32: return "F32"
        case .f16: return "F16"
        case .bf16: return "BF16"
        case .i64: return "I64"
        case .i32: return "I32"
        }
    }

    /// The dtype for a safetensors header name; nil for names the format has but Kinema does not hold
    /// (U8, I8, BOOL, F8_E4M3, …).
    public init?(safetensorsName name: String) {
        guard let match = DType.allCases.first(where: { $0.safetensorsName == name }) else { return nil }
        self = match
    }
}

/// What went wrong reading or writing a safetensors file. `file` is the path as given; every description says
/// which file, which tensor when one is involved, and what to do about it.
public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    /// The file ends before its header or before a tensor's data does.
    case truncated(file: String, reason: String)
    /// The header is not JSON, lacks a field, or has offsets that disagree with a tensor's shape and dtype.
    case badHeader(file: String, reason: String)
    /// A tensor's dtype is one Kinema cannot hold (anything but F64 F32 F16 BF16 I64 I32).
    case unknownDType(file: String, tensor: String, dtype: String)
    /// A tensor asked for by name is not in the file.
    case missingTensor(file: String, tensor: String)
    /// A tensor's shape is not the one the caller needs (a checkpoint of another model configuration).
    case shapeMismatch(file: String, tensor: String, expected: [Int], found: [Int])
    /// The operating system refused an open, map, write, sync or rename.
    case io(file: String, reason: String)

    public var description: String {
        switch self {
        case let .truncated(file, reason):
            return "safetensors file '\(file)' is truncated: \(reason). It was probably cut short by an interrupted "
                + "download, copy or save; re-download or re-save the checkpoint."
        case let .badHeader(file, reason):
            return "safetensors file '\(file)' has an invalid header: \(reason). The file is corrupt or not a "
                + "safetensors file; re-download or re-save the checkpoint."
        case let .unknownDType(file, tensor, dtype):
            let supported = DType.allCases.map(\.safetensorsName).joined(separator: ", ")
            return "tensor '\(tensor)' in safetensors file '\(file)' has dtype \(dtype), which Kinema cannot load "
                + "(supported: \(supported)); re-save the checkpoint with the tensor converted to one of these."
        case let .missingTensor(file, tensor):
            return "safetensors file '\(file)' has no tensor named '\(tensor)'; check that the checkpoint belongs "
                + "to this model and configuration, or re-save it."
        case let .shapeMismatch(file, tensor, expected, found):
            return "tensor '\(tensor)' in safetensors file '\(file)' has shape \(found) but \(expected) is needed; "
                + "the checkpoint was saved for a different model configuration — use a matching checkpoint or "
                + "configuration."
        case let .io(file, reason):
            return "cannot access safetensors file '\(file)': \(reason); check the path, permissions and free disk space."
        }
    }
}

/// Raw little-endian bytes of `dtype` as host floats. Integer dtypes convert by value (i64 rounds to the
/// nearest float). The bytes need not be aligned: a tensor inside a mapped file generally is not.
public func decodeFloats(_ bytes: UnsafeRawBufferPointer, dtype: DType) -> [Float] {
    precondition(bytes.count % dtype.byteSize == 0,
                 "decodeFloats: \(bytes.count) bytes is not a whole number of \(dtype) elements")
    let count = bytes.count / dtype.byteSize
    return [Float](unsafeUninitializedCapacity: count) { out, initialized in
        for i in 0..<count {
            let at = i * dtype.byteSize
            switch dtype {
            case .f32: out[i] = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
            case .f64: out[i] = Float(Double(bitPattern: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self))))
            case .bf16: out[i] = float(fromBF16: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt16.self)))
            case .f16: out[i] = float(fromF16: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt16.self)))
            case .i32: out[i] = Float(Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: Int32.self)))
            case .i64: out[i] = Float(Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: Int64.self)))
            }
        }
        initialized = count
    }
}

/// Host floats as raw little-endian bytes of `dtype` (bf16/f16 round to nearest even; integer dtypes truncate
/// toward zero and need values in range). The inverse of `decodeFloats` for values the dtype can represent.
public func encodeFloats(_ values: [Float], dtype: DType) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: values.count * dtype.byteSize)
    bytes.withUnsafeMutableBytes { out in
        for (i, value) in values.enumerated() {
            let at = i * dtype.byteSize
            switch dtype {
            case .f32: out.storeBytes(of: value.bitPattern.littleEndian, toByteOffset: at, as: UInt32.self)
            case .f64: out.storeBytes(of: Double(value).bitPattern.littleEndian, toByteOffset: at, as: UInt64.self)
            case .bf16: out.storeBytes(of: bf16Bits(from: value).littleEndian, toByteOffset: at, as: UInt16.self)
            case .f16: out.storeBytes(of: f16Bits(from: value).littleEndian, toByteOffset: at, as: UInt16.self)
            case .i32: out.storeBytes(of: Int32(value).littleEndian, toByteOffset: at, as: Int32.self)
            case .i64: out.storeBytes(of: Int64(value).littleEndian, toByteOffset: at, as: Int64.self)
            }
        }
    }
    return bytes
}
