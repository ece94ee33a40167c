import Foundation

/// What the text-to-video pipeline needs of a tokenizer: a caption's ids with the model's special tokens, cut to
/// the model's length, and its attention mask (1 = token, 0 = padding).
public protocol CaptionTokenizer: Sendable {
    /// The special tokens, length and padding; a text encoder's caption length is set here.
    var template: SequenceTemplate { get set }
    func encode(_ text: String) -> (ids: [Int32], mask: [Int32])
}

/// The special tokens around a sequence (BERT: [CLS] … [SEP]; T5: … </s>; CLIP: <|startoftext|> … <|endoftext|>),
/// the truncation that keeps them, and the padding after them.
public struct SequenceTemplate: Sendable, Equatable {
    public var prefix: Int32?
    public var suffix: Int32
    public var pad: Int32
    public var maxLength: Int
    public var padsToMaxLength: Bool

    public init(prefix: Int32?, suffix: Int32, pad: Int32, maxLength: Int, padsToMaxLength: Bool = false) {
        (self.prefix, self.suffix, self.pad, self.maxLength, self.padsToMaxLength) = (prefix, suffix, pad, maxLength,
                                                                                      padsToMaxLength)
    }

    /// How many content ids fit between the special tokens.
    public var capacity: Int { maxLength - (prefix == nil ? 1 : 2) }

    /// prefix + content (cut to `capacity`) + suffix, padded to `maxLength` when `padsToMaxLength`.
    public func apply(_ content: [Int32]) -> (ids: [Int32], mask: [Int32]) {
        var ids = (prefix.map { [$0] } ?? []) + content.prefix(max(capacity, 0)) + [suffix]
        var mask = [Int32](repeating: 1, count: ids.count)
        if padsToMaxLength && ids.count < maxLength {
            mask += [Int32](repeating: 0, count: maxLength - ids.count)
            ids += [Int32](repeating: pad, count: maxLength - ids.count)
        }
        return (ids, mask)
    }
}

extension CaptionTokenizer {
    /// A batch padded to its longest text (or to `maxLength` when the template pads): ids and mask, row-major [B, L].
    public func encode(batch texts: [String]) -> (ids: [Int32], mask: [Int32], length: Int) {
        let encoded = texts.map(encode)
        let length = encoded.map(\.ids.count).max() ?? 1
        var ids: [Int32] = [], mask: [Int32] = []
        for (rowIDs, rowMask) in encoded {
            ids += rowIDs + [Int32](repeating: template.pad, count: length - rowIDs.count)
            mask += rowMask + [Int32](repeating: 0, count: length - rowMask.count)
        }
        return (ids, mask, length)
    }
}

/// Special tokens written in a text are kept whole, matched before any normalisation, leftmost first and the
/// longest of those starting at one place (as `tokenizers` matches its added tokens).
struct SpecialTokenSplitter: Sendable {
    enum Piece: Equatable { case special(Int32), text(String) }

    let tokens: [(scalars: [Unicode.Scalar], id: Int32)]

    init(_ tokens: [String: Int32]) {
        self.tokens = tokens.map { (Array($0.key.unicodeScalars), $0.value) }.filter { !$0.0.isEmpty }
            .sorted { $0.0.count > $1.0.count }
    }

    /// A text's ids: special tokens kept whole, the text between them through `tokenize`, stopping once the
    /// template is full, then the template's special tokens, truncation and padding.
    func encode(_ text: String, template: SequenceTemplate, tokenize: (String) -> [Int32]) -> (ids: [Int32], mask: [Int32]) {
        var ids: [Int32] = []
        for piece in split(text) {
            switch piece {
            case .special(let id): ids.append(id)
            case .text(let text): ids += tokenize(text)
            }
            if ids.count >= template.capacity { break }
        }
        return template.apply(ids)
    }

    func split(_ text: String) -> [Piece] {
        let scalars = Array(text.unicodeScalars)
        var pieces: [Piece] = [], start = 0, position = 0
        func flush(upTo end: Int) {
            if end > start { pieces.append(.text(String(String.UnicodeScalarView(scalars[start..<end])))) }
        }
        while position < scalars.count {
            if let match = tokens.first(where: { token in
                position + token.scalars.count <= scalars.count
                    && scalars[position..<(position + token.scalars.count)].elementsEqual(token.scalars)
            }) {
                flush(upTo: position)
                pieces.append(.special(match.id))
                position += match.scalars.count
                start = position
            } else {
                position += 1
            }
        }
        flush(upTo: scalars.count)
        return pieces
    }
}

/// Reading a tokenizer folder's JSON files.
enum TokenizerFiles {
    static func json(_ url: URL) throws -> [String: Any]? {
        guard let data = FileManager.default.contents(atPath: url.path) else { return nil }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelError.badCheckpoint(path: url.path, reason: "not a JSON object")
        }
        return object
    }

    /// tokenizer.json's special added tokens, content → id.
    static func specialTokens(_ root: [String: Any]) -> [String: Int32] {
        var tokens: [String: Int32] = [:]
        for token in root["added_tokens"] as? [[String: Any]] ?? [] where token["special"] as? Bool ?? false {
            if let content = token["content"] as? String, let id = (token["id"] as? NSNumber)?.int32Value {
                tokens[content] = id
            }
        }
        return tokens
    }

    /// tokenizer.json's truncation length, else tokenizer_config.json's model_max_length (capped: transformers
    /// writes a huge number for "none"), else `fallback`.
    static func maxLength(_ root: [String: Any]?, config: [String: Any]?, fallback: Int) -> Int {
        if let length = ((root?["truncation"] as? [String: Any])?["max_length"] as? NSNumber)?.intValue { return length }
        if let length = (config?["model_max_length"] as? NSNumber)?.intValue, length < 1_000_000 { return length }
        return fallback
    }
}
