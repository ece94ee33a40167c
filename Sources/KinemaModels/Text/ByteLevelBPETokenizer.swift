import Foundation

/// CLIP's tokenizer: byte-level BPE with an end-of-word suffix, as `tokenizers` runs it from a `tokenizer.json`
/// (NFC, whitespace runs to one space, lowercase; CLIP's split pattern; byte level; BPE with "</w>";
/// "<|startoftext|> $A <|endoftext|>"), or from `vocab.json` and `merges.txt` with the same pipeline:
///   1. special tokens written in the text are kept whole;
///   2. normalise: NFC, every whitespace run to one space, lowercase;
///   3. split into contractions ('s 't 're 've 'm 'll 'd), letter runs, single digits and runs of other
///      non-space characters (spaces are dropped);
///   4. each piece's UTF-8 bytes as GPT-2's printable byte characters, "</w>" on the last, then the merges in rank
///      order (the lowest-ranked adjacent pair first, every occurrence left to right);
///   5. truncate to `maxLength` − 2 and add the start and end tokens; pad with the pad token (CLIP's is
///      <|endoftext|>) when the template pads.
public struct ByteLevelBPETokenizer: CaptionTokenizer {
    public let vocabulary: [String: Int32]
    public var template: SequenceTemplate
    let ranks: [Pair: Int]
    let unknownToken: Int32?
    let specials: SpecialTokenSplitter
    static let suffix = "</w>"
    static let pattern = try! NSRegularExpression(
        pattern: #"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"#)
    static let whitespace = try! NSRegularExpression(pattern: #"\s+"#)

    struct Pair: Hashable { let first, second: String }

    /// GPT-2's reversible map of the 256 byte values to printable characters: the printable Latin-1 ones map to
    /// themselves, the rest to U+0100 onwards in byte order.
    static let byteCharacters: [String] = {
        let printable = Set(Array(33...126) + Array(161...172) + Array(174...255))
        var next = 256
        return (0..<256).map { byte in
            if printable.contains(byte) { return String(Unicode.Scalar(UInt8(byte))) }
            defer { next += 1 }
            return String(Unicode.Scalar(UInt32(next))!)
        }
    }()

    init(vocabulary: [String: Int32], merges: [Pair], specialTokens: [String: Int32], unknown: String?,
         template: SequenceTemplate) {
        self.vocabulary = vocabulary
        var ranks: [Pair: Int] = [:]
        for (rank, pair) in merges.enumerated() where ranks[pair] == nil { ranks[pair] = rank }
        self.ranks = ranks
        unknownToken = unknown.flatMap { vocabulary[$0] }
        specials = SpecialTokenSplitter(specialTokens)
        self.template = template
    }

    /// Reads `tokenizer.json` when the folder has one, else `vocab.json` and `merges.txt`; the length from the
    /// truncation or tokenizer_config.json's model_max_length (CLIP: 77), or `maxLength`.
    public init(folder: String, maxLength: Int? = nil, padsToMaxLength: Bool = false) throws {
        let url = URL(fileURLWithPath: folder)
        let config = try TokenizerFiles.json(url.appendingPathComponent("tokenizer_config.json"))
        let jsonPath = url.appendingPathComponent("tokenizer.json").path
        let root = try TokenizerFiles.json(URL(fileURLWithPath: jsonPath))
        var vocabulary: [String: Int32] = [:], merges: [Pair] = [], specials: [String: Int32] = [:]
        var unknown: String? = "<|endoftext|>"
        if let root {
            guard let model = root["model"] as? [String: Any], model["type"] as? String == "BPE",
                  let vocab = model["vocab"] as? [String: Any], let list = model["merges"] as? [Any] else {
                throw ModelError.badCheckpoint(path: jsonPath, reason: "not a BPE tokenizer.json (model.type, vocab, merges)")
            }
            guard model["end_of_word_suffix"] as? String == Self.suffix else {
                throw ModelError.badCheckpoint(path: jsonPath, reason: "not CLIP's BPE: end_of_word_suffix is not </w>")
            }
            vocabulary = vocab.compactMapValues { ($0 as? NSNumber)?.int32Value }
            merges = try list.map { entry in
                let parts = (entry as? [String]) ?? (entry as? String)?.split(separator: " ").map(String.init) ?? []
                guard parts.count == 2 else { throw ModelError.badCheckpoint(path: jsonPath, reason: "a merge is not a pair") }
                return Pair(first: parts[0], second: parts[1])
            }
            specials = TokenizerFiles.specialTokens(root)
            unknown = model["unk_token"] as? String
        } else {
            let vocabPath = url.appendingPathComponent("vocab.json")
            guard let vocab = try TokenizerFiles.json(vocabPath),
                  let text = try? String(contentsOf: url.appendingPathComponent("merges.txt"), encoding: .utf8) else {
                throw ModelError.badCheckpoint(path: folder, reason: "neither tokenizer.json nor vocab.json with "
                                               + "merges.txt is here")
            }
            vocabulary = vocab.compactMapValues { ($0 as? NSNumber)?.int32Value }
            merges = text.split(whereSeparator: \.isNewline).filter { !$0.hasPrefix("#version") }.compactMap { line in
                let parts = line.split(separator: " ")
                return parts.count == 2 ? Pair(first: String(parts[0]), second: String(parts[1])) : nil
            }
            for token in ["<|startoftext|>", "<|endoftext|>"] { specials[token] = vocabulary[token] }
        }
        let start = (config?["bos_token"] as? String) ?? "<|startoftext|>"
        let end = (config?["eos_token"] as? String) ?? "<|endoftext|>"
        guard let bos = vocabulary[start], let eos = vocabulary[end] else {
            throw ModelError.badCheckpoint(path: folder, reason: "the vocabulary lacks \(start) or \(end)")
        }
        let pad = (config?["pad_token"] as? String).flatMap { vocabulary[$0] } ?? eos
        self.init(vocabulary: vocabulary, merges: merges, specialTokens: specials, unknown: unknown,
                  template: SequenceTemplate(prefix: bos, suffix: eos, pad: pad,
                                             maxLength: maxLength ?? TokenizerFiles.maxLength(root, config: config, fallback: 77),
                                             padsToMaxLength: padsToMaxLength))
    }

    public func encode(_ text: String) -> (ids: [Int32], mask: [Int32]) {
        specials.encode(text, template: template) { words($0).flatMap(merge) }
    }

    /// Steps 2 and 3: the normalised text's pieces.
    func words(_ text: String) -> [String] {
        let composed = text.precomposedStringWithCanonicalMapping as NSString
        let spaced = Self.whitespace.stringByReplacingMatches(in: composed as String, range: NSRange(location: 0,
                                                              length: composed.length), withTemplate: " ")
        let lowered = spaced.lowercased() as NSString
        return Self.pattern.matches(in: lowered as String, range: NSRange(location: 0, length: lowered.length))
            .map { lowered.substring(with: $0.range) }
    }

    /// Step 4 for one piece.
    func merge(_ word: String) -> [Int32] {
        var symbols = word.utf8.map { Self.byteCharacters[Int($0)] }
        guard !symbols.isEmpty else { return [] }
        symbols[symbols.count - 1] += Self.suffix
        while symbols.count > 1 {
            var best: (rank: Int, pair: Pair)?
            for (a, b) in zip(symbols, symbols.dropFirst()) {
                if let rank = ranks[Pair(first: a, second: b)], rank < best?.rank ?? .max { best = (rank, Pair(first: a, second: b)) }
            }
            guard let pair = best?.pair else { break }
            var merged: [String] = [], index = 0
            while index < symbols.count {
                if index + 1 < symbols.count && symbols[index] == pair.first && symbols[index + 1] == pair.second {
                    merged.append(pair.first + pair.second)
                    index += 2
                } else {
                    merged.append(symbols[index])
                    index += 1
                }
            }
            symbols = merged
        }
        return symbols.compactMap { vocabulary[$0] ?? unknownToken }
    }
}
