import Foundation

/// A SentencePiece `.model` file (the `ModelProto` protobuf): its pieces with scores and types, and the normaliser's
/// precompiled character map. Only the fields a unigram tokenizer needs are read; the rest are skipped by wire type.
struct SentencePieceModel {
    enum PieceType: Int { case normal = 1, unknown, control, userDefined, unused, byte }

    var pieces: [(piece: String, score: Float, type: PieceType)] = []
    var precompiledCharsmap: [UInt8]?
    var modelType = 1  // TrainerSpec.model_type: 1 unigram, 2 BPE, 3 word, 4 char

    init(contentsOf path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelError.badCheckpoint(path: path, reason: "unreadable SentencePiece model")
        }
        do {
            try ProtobufReader.fields(of: Array(data)) { field, value in
                switch (field, value) {
                case (1, .bytes(let bytes)): pieces.append(try Self.piece(bytes))
                case (2, .bytes(let bytes)):  // TrainerSpec
                    try ProtobufReader.fields(of: bytes) { if $0 == 3, case .varint(let v) = $1 { modelType = Int(v) } }
                case (3, .bytes(let bytes)):  // NormalizerSpec
                    try ProtobufReader.fields(of: bytes) { if $0 == 2, case .bytes(let map) = $1 { precompiledCharsmap = map } }
                default: break
                }
            }
        } catch let error as ProtobufReader.Malformed {
            throw ModelError.badCheckpoint(path: path, reason: "not a SentencePiece model: \(error.reason)")
        }
        guard !pieces.isEmpty else { throw ModelError.badCheckpoint(path: path, reason: "a SentencePiece model with no pieces") }
    }

    static func piece(_ bytes: [UInt8]) throws -> (piece: String, score: Float, type: PieceType) {
        var piece = "", score: Float = 0, type = PieceType.normal
        try ProtobufReader.fields(of: bytes) { field, value in
            switch (field, value) {
            case (1, .bytes(let text)): piece = String(decoding: text, as: UTF8.self)
            case (2, .fixed32(let bits)): score = Float(bitPattern: bits)
            case (3, .varint(let raw)): type = PieceType(rawValue: Int(raw)) ?? .normal
            default: break
            }
        }
        return (piece, score, type)
    }
}

/// The protobuf wire format, enough to walk a message's fields.
struct ProtobufReader {
    struct Malformed: Error { let reason: String }
    enum Value { case varint(UInt64), fixed64(UInt64), bytes([UInt8]), fixed32(UInt32) }

    let bytes: [UInt8]
    var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func varint() throws -> UInt64 {
        var value: UInt64 = 0, shift: UInt64 = 0
        while true {
            guard position < bytes.count, shift < 64 else { throw Malformed(reason: "a varint runs past the end") }
            let byte = bytes[position]
            position += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
    }

    mutating func take(_ count: Int) throws -> [UInt8] {
        guard count >= 0, position + count <= bytes.count else { throw Malformed(reason: "a field runs past the end") }
        defer { position += count }
        return Array(bytes[position..<(position + count)])
    }

    /// Calls `body` with each field number and value of the message `bytes`, in order.
    static func fields(of bytes: [UInt8], _ body: (Int, Value) throws -> Void) throws {
        var reader = ProtobufReader(bytes)
        try reader.fields(body)
    }

    mutating func fields(_ body: (Int, Value) throws -> Void) throws {
        while position < bytes.count {
            let key = try varint()
            let value: Value
            switch key & 7 {
            case 0: value = .varint(try varint())
            case 1: value = .fixed64(try take(8).reversed().reduce(0) { $0 << 8 | UInt64($1) })
            case 2: value = .bytes(try take(Int(try varint())))
            case 5: value = .fixed32(try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) })
            default: throw Malformed(reason: "wire type \(key & 7) at byte \(position)")
            }
            try body(Int(key >> 3), value)
        }
    }
}

/// SentencePiece's precompiled normaliser (nmt_nfkc and the like): a double-array trie (Darts-clone) over UTF-8
/// byte strings whose values index a pool of NUL-terminated replacements. Applied as `tokenizers`' `Precompiled`
/// normaliser applies it: per grapheme cluster, the whole cluster when it is shorter than 6 bytes and a key is a
/// prefix of it, else per scalar; the first (shortest) matching key's replacement.
struct PrecompiledCharsmap: Sendable {
    let units: [UInt32]
    let pool: [UInt8]

    init(_ blob: [UInt8], path: String) throws {
        func fail() -> ModelError { .badCheckpoint(path: path, reason: "malformed precompiled_charsmap") }
        guard blob.count >= 4 else { throw fail() }
        let trieBytes = Int(blob[0..<4].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        guard trieBytes % 4 == 0, 4 + trieBytes <= blob.count else { throw fail() }
        units = stride(from: 4, to: 4 + trieBytes, by: 4).map { i in
            UInt32(blob[i]) | UInt32(blob[i + 1]) << 8 | UInt32(blob[i + 2]) << 16 | UInt32(blob[i + 3]) << 24
        }
        pool = Array(blob[(4 + trieBytes)...])
    }

    /// The values of the keys that are prefixes of `key`, shortest first (Darts-clone's commonPrefixSearch).
    func firstPrefixValue(_ key: [UInt8]) -> Int? {
        func offset(_ unit: UInt32) -> Int { Int((unit >> 10) << ((unit & (1 << 9)) >> 6)) }
        guard !units.isEmpty else { return nil }
        var node = offset(units[0])
        for byte in key {
            node ^= Int(byte)
            guard node < units.count else { return nil }
            let unit = units[node]
            guard unit & ((1 << 31) | 0xFF) == UInt32(byte) else { return nil }  // the label must be this byte
            node ^= offset(unit)
            if (unit >> 8) & 1 == 1, node < units.count { return Int(units[node] & 0x7FFF_FFFF) }  // has a leaf
        }
        return nil
    }

    func replacement(_ key: [UInt8]) -> [UInt8]? {
        guard let start = firstPrefixValue(key), start < pool.count else { return nil }
        return Array(pool[start...].prefix { $0 != 0 })
    }

    func normalize(_ text: String) -> String {
        var out: [UInt8] = []
        for cluster in text {
            let bytes = Array(String(cluster).utf8)
            if bytes.count < 6, let replaced = replacement(bytes) {
                out += replaced
                continue
            }
            for scalar in cluster.unicodeScalars {
                let scalarBytes = Array(String(scalar).utf8)
                out += replacement(scalarBytes) ?? scalarBytes
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
