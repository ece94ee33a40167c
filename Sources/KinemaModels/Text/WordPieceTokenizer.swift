import Foundation

/// BERT's tokenizer as Hugging Face `tokenizers` runs it from a `tokenizer.json` (BertNormalizer, BertPreTokenizer,
/// WordPiece, "[CLS] $A [SEP]"), or from a `vocab.txt` with BERT's defaults:
///   1. special tokens ([CLS], [SEP], [PAD], [MASK], [UNK]) written in the text are kept whole;
///   2. normalise: drop NUL, U+FFFD and control characters, map whitespace to " ", pad CJK ideographs with spaces,
///      strip accents (NFD, then drop non-spacing marks) and lowercase each scalar;
///   3. split on whitespace and around every punctuation character;
///   4. WordPiece: the longest vocabulary prefix, then "##"-continued pieces; a word that does not split (or has
///      more than 100 characters) is one [UNK];
///   5. truncate to `maxLength` − 2, add [CLS] and [SEP], pad with [PAD] to `maxLength` when `padsToMaxLength`.
public struct WordPieceTokenizer: CaptionTokenizer {
    public let vocabulary: [String: Int32]
    public let lowercase: Bool
    public let stripAccents: Bool
    public var template: SequenceTemplate
    public let maxCharactersPerWord: Int
    public let unknownToken: Int32
    let specials: SpecialTokenSplitter

    public var maxLength: Int { template.maxLength }
    public var padsToMaxLength: Bool { template.padsToMaxLength }

    public init(vocabulary: [String: Int32], lowercase: Bool = true, stripAccents: Bool? = nil, maxLength: Int = 512,
                padsToMaxLength: Bool = false, maxCharactersPerWord: Int = 100) throws {
        func id(_ token: String) throws -> Int32 {
            guard let id = vocabulary[token] else {
                throw ModelError.invalidConfig("WordPiece vocabulary lacks the special token \(token)")
            }
            return id
        }
        guard maxLength >= 2 else { throw ModelError.invalidConfig("WordPiece max length \(maxLength) is below 2") }
        self.vocabulary = vocabulary
        self.lowercase = lowercase
        self.stripAccents = stripAccents ?? lowercase  // BERT: accents go with case unless said otherwise
        self.maxCharactersPerWord = maxCharactersPerWord
        template = SequenceTemplate(prefix: try id("[CLS]"), suffix: try id("[SEP]"), pad: try id("[PAD]"),
                                    maxLength: maxLength, padsToMaxLength: padsToMaxLength)
        unknownToken = try id("[UNK]")
        specials = SpecialTokenSplitter(Dictionary(uniqueKeysWithValues: ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"]
            .compactMap { token in vocabulary[token].map { (token, $0) } }))
    }

    /// Reads `tokenizer.json` (its normalizer, WordPiece vocabulary, truncation and padding) when the folder has
    /// one, else `vocab.txt` (one token per line, id = line number) with `tokenizer_config.json`'s do_lower_case.
    public init(folder: String) throws {
        let url = URL(fileURLWithPath: folder)
        let json = url.appendingPathComponent("tokenizer.json")
        if let data = FileManager.default.contents(atPath: json.path) {
            try self.init(tokenizerJSON: data, path: json.path)
            return
        }
        let vocabPath = url.appendingPathComponent("vocab.txt").path
        guard let text = try? String(contentsOfFile: vocabPath, encoding: .utf8) else {
            throw ModelError.badCheckpoint(path: folder, reason: "neither tokenizer.json nor vocab.txt is readable")
        }
        var vocabulary: [String: Int32] = [:]
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        where !line.isEmpty {
            vocabulary[String(line.hasSuffix("\r") ? line.dropLast() : line)] = Int32(index)  // the last one wins, as in transformers
        }
        let config = FileManager.default.contents(atPath: url.appendingPathComponent("tokenizer_config.json").path)
            .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] } ?? [:]
        try self.init(vocabulary: vocabulary, lowercase: (config["do_lower_case"] as? Bool) ?? true,
                      stripAccents: config["strip_accents"] as? Bool,
                      maxLength: (config["model_max_length"] as? Int).map { min($0, 512) } ?? 512)
    }

    init(tokenizerJSON data: Data, path: String) throws {
        guard let root = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let model = root["model"] as? [String: Any], model["type"] as? String == "WordPiece",
              let vocab = model["vocab"] as? [String: Int] else {
            throw ModelError.badCheckpoint(path: path, reason: "not a WordPiece tokenizer.json (model.type, model.vocab)")
        }
        let normalizer = root["normalizer"] as? [String: Any] ?? [:]
        if let type = normalizer["type"] as? String, type != "BertNormalizer" {
            throw ModelError.badCheckpoint(path: path, reason: "normalizer \(type) is not BertNormalizer")
        }
        let truncation = (root["truncation"] as? [String: Any])?["max_length"] as? Int
        let fixed = ((root["padding"] as? [String: Any])?["strategy"] as? [String: Any])?["Fixed"] as? Int
        try self.init(vocabulary: vocab.mapValues { Int32($0) }, lowercase: normalizer["lowercase"] as? Bool ?? true,
                      stripAccents: normalizer["strip_accents"] as? Bool, maxLength: truncation ?? fixed ?? 512,
                      padsToMaxLength: fixed != nil,
                      maxCharactersPerWord: model["max_input_chars_per_word"] as? Int ?? 100)
    }

    /// Token ids and attention mask (1 for a token, 0 for padding) of one text.
    public func encode(_ text: String) -> (ids: [Int32], mask: [Int32]) {
        specials.encode(text, template: template) { words(normalize($0)).flatMap(wordPieces) }
    }

    /// BertNormalizer: clean, space out CJK ideographs, strip accents, lowercase (per scalar, as `tokenizers` does).
    func normalize(_ text: String) -> [Unicode.Scalar] {
        var cleaned: [Unicode.Scalar] = []
        for scalar in text.unicodeScalars {
            if scalar.value == 0 || scalar.value == 0xFFFD || Self.isControl(scalar) { continue }
            if Self.isWhitespace(scalar) {
                cleaned.append(" ")
            } else if Self.isCJK(scalar) {
                cleaned += [" ", scalar, " "]
            } else {
                cleaned.append(scalar)
            }
        }
        if stripAccents {
            var string = String.UnicodeScalarView()
            string.append(contentsOf: cleaned)
            cleaned = String(string).decomposedStringWithCanonicalMapping.unicodeScalars
                .filter { $0.properties.generalCategory != .nonspacingMark }
        }
        if lowercase { cleaned = cleaned.flatMap { $0.properties.lowercaseMapping.unicodeScalars } }
        return cleaned
    }

    /// BertPreTokenizer: words split on whitespace, each punctuation character a word of its own.
    func words(_ scalars: [Unicode.Scalar]) -> [[Unicode.Scalar]] {
        var words: [[Unicode.Scalar]] = [], current: [Unicode.Scalar] = []
        for scalar in scalars {
            if Self.isWhitespace(scalar) || Self.isPunctuation(scalar) {
                if !current.isEmpty { words.append(current) }
                current = []
                if Self.isPunctuation(scalar) { words.append([scalar]) }
            } else {
                current.append(scalar)
            }
        }
        if !current.isEmpty { words.append(current) }
        return words
    }

    /// Greedy longest-match-first WordPiece of one word.
    func wordPieces(_ word: [Unicode.Scalar]) -> [Int32] {
        guard word.count <= maxCharactersPerWord else { return [unknownToken] }
        var pieces: [Int32] = [], start = 0
        while start < word.count {
            var end = word.count, found: Int32?
            while end > start {
                var candidate = String(String.UnicodeScalarView(word[start..<end]))
                if start > 0 { candidate = "##" + candidate }
                if let id = vocabulary[candidate] { found = id; break }
                end -= 1
            }
            guard let id = found else { return [unknownToken] }
            pieces.append(id)
            start = end
        }
        return pieces
    }

    static func isWhitespace(_ s: Unicode.Scalar) -> Bool {
        s == "\t" || s == "\n" || s == "\r" || s.properties.isWhitespace
    }

    /// Any "other" category (Cc, Cf, Cs, Co, Cn) except the three whitespace controls.
    static func isControl(_ s: Unicode.Scalar) -> Bool {
        if s == "\t" || s == "\n" || s == "\r" { return false }
        switch s.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned: return true
        default: return false
        }
    }

    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        if s.isASCII, let ascii = Character(s).asciiValue {
            return (33...47).contains(ascii) || (58...64).contains(ascii) || (91...96).contains(ascii)
                || (123...126).contains(ascii)
        }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation, .initialPunctuation,
             .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    /// The CJK Unified Ideographs blocks BERT spaces out.
    static func isCJK(_ s: Unicode.Scalar) -> Bool {
        let ranges: [ClosedRange<UInt32>] = [0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F,
                                             0x2B740...0x2B81F, 0x2B920...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F]
        return ranges.contains { $0.contains(s.value) }
    }
}
