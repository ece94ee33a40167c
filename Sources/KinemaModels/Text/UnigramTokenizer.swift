import Foundation

/// T5's tokenizer: a SentencePiece unigram model as `tokenizers` runs it from a `tokenizer.json` (Precompiled
/// normaliser, WhitespaceSplit + Metaspace, Unigram, "$A </s>"), or from a `spiece.model`, converted the way
/// transformers converts one:
///   1. special tokens (<pad>, </s>, <unk>, …) written in the text are kept whole;
///   2. normalise with the model's precompiled character map (NFKC and SentencePiece's extras);
///   3. split on whitespace and put "▁" before every word;
///   4. Viterbi over the pieces: the segmentation with the largest sum of piece scores; a character no piece covers
///      is <unk> scored 10 below the lowest piece, and runs of <unk> fuse into one;
///   5. truncate to `maxLength` − 1, add </s>, pad with <pad> when the template pads.
public struct UnigramTokenizer: CaptionTokenizer {
    public let pieces: [String: (id: Int32, score: Double)]
    public let unknownToken: Int32
    public var template: SequenceTemplate
    let longestPiece: Int
    let unknownScore: Double
    let charsmap: PrecompiledCharsmap?
    let specials: SpecialTokenSplitter

    init(vocabulary: [(String, Double)], unknownToken: Int32, charsmap: PrecompiledCharsmap?, specialTokens: [String: Int32],
         template: SequenceTemplate) {
        var pieces: [String: (Int32, Double)] = [:]
        for (index, (piece, score)) in vocabulary.enumerated() where pieces[piece] == nil {
            pieces[piece] = (Int32(index), score)
        }
        self.pieces = pieces
        self.unknownToken = unknownToken
        self.charsmap = charsmap
        self.template = template
        specials = SpecialTokenSplitter(specialTokens)
        longestPiece = vocabulary.map { $0.0.unicodeScalars.count }.max() ?? 1
        unknownScore = (vocabulary.map(\.1).min() ?? 0) - 10
    }

    /// Reads `tokenizer.json` when the folder has one, else `spiece.model`; the length from tokenizer_config.json's
    /// model_max_length (or `maxLength`), padding to it when `padsToMaxLength`.
    public init(folder: String, maxLength: Int? = nil, padsToMaxLength: Bool = false) throws {
        let url = URL(fileURLWithPath: folder)
        let config = try TokenizerFiles.json(url.appendingPathComponent("tokenizer_config.json"))
        if let root = try TokenizerFiles.json(url.appendingPathComponent("tokenizer.json")) {
            try self.init(tokenizerJSON: root, path: url.appendingPathComponent("tokenizer.json").path, config: config,
                          maxLength: maxLength, padsToMaxLength: padsToMaxLength)
            return
        }
        let path = url.appendingPathComponent("spiece.model").path
        guard FileManager.default.fileExists(atPath: path) else {
            throw ModelError.badCheckpoint(path: folder, reason: "neither tokenizer.json nor spiece.model is here")
        }
        let model = try SentencePieceModel(contentsOf: path)
        guard model.modelType == 1 else {
            throw ModelError.badCheckpoint(path: path, reason: "a SentencePiece model of type \(model.modelType), not unigram (1)")
        }
        func id(_ piece: String) -> Int32? { model.pieces.firstIndex { $0.piece == piece }.map(Int32.init) }
        guard let unknown = model.pieces.firstIndex(where: { $0.type == .unknown }), let eos = id("</s>") else {
            throw ModelError.badCheckpoint(path: path, reason: "the model lacks an unknown piece or </s>")
        }
        var specials: [String: Int32] = [:]
        for (index, piece) in model.pieces.enumerated() where piece.type == .control || piece.type == .unknown {
            specials[piece.piece] = Int32(index)
        }
        self.init(vocabulary: model.pieces.map { ($0.piece, Double($0.score)) }, unknownToken: Int32(unknown),
                  charsmap: try model.precompiledCharsmap.map { try PrecompiledCharsmap($0, path: path) },
                  specialTokens: specials,
                  template: SequenceTemplate(prefix: nil, suffix: eos, pad: id("<pad>") ?? eos,
                                             maxLength: maxLength ?? TokenizerFiles.maxLength(nil, config: config, fallback: 512),
                                             padsToMaxLength: padsToMaxLength))
    }

    init(tokenizerJSON root: [String: Any], path: String, config: [String: Any]?, maxLength: Int?,
         padsToMaxLength: Bool) throws {
        func fail(_ reason: String) -> ModelError { .badCheckpoint(path: path, reason: reason) }
        guard let model = root["model"] as? [String: Any], model["type"] as? String == "Unigram",
              let vocab = model["vocab"] as? [[Any]] else {
            throw fail("not a Unigram tokenizer.json (model.type, model.vocab)")
        }
        if model["byte_fallback"] as? Bool == true { throw fail("byte_fallback Unigram models are not supported") }
        let vocabulary = try vocab.map { entry -> (String, Double) in
            guard entry.count == 2, let piece = entry[0] as? String, let score = (entry[1] as? NSNumber)?.doubleValue else {
                throw fail("a vocab entry is not [piece, score]")
            }
            return (piece, score)
        }
        // The normaliser: Precompiled alone or inside a Sequence (a Replace of repeated spaces beside it changes
        // nothing here, the words being split on whitespace anyway).
        var normalizers = [root["normalizer"] as? [String: Any]].compactMap { $0 }
        if let sequence = normalizers.first, sequence["type"] as? String == "Sequence" {
            normalizers = sequence["normalizers"] as? [[String: Any]] ?? []
        }
        var charsmap: PrecompiledCharsmap?
        for normalizer in normalizers {
            switch normalizer["type"] as? String {
            case "Precompiled":
                guard let encoded = normalizer["precompiled_charsmap"] as? String,
                      let blob = Data(base64Encoded: encoded) else { throw fail("Precompiled normalizer without a charsmap") }
                charsmap = try PrecompiledCharsmap(Array(blob), path: path)
            case "Replace": continue
            case let other: throw fail("normalizer \(other ?? "?") is not supported (Precompiled, Replace)")
            }
        }
        let specials = TokenizerFiles.specialTokens(root)
        guard let unknown = (model["unk_id"] as? NSNumber)?.int32Value, let eos = specials["</s>"] else {
            throw fail("the model lacks unk_id or the special token </s>")
        }
        self.init(vocabulary: vocabulary, unknownToken: unknown, charsmap: charsmap, specialTokens: specials,
                  template: SequenceTemplate(prefix: nil, suffix: eos, pad: specials["<pad>"] ?? eos,
                                             maxLength: maxLength ?? TokenizerFiles.maxLength(root, config: config, fallback: 512),
                                             padsToMaxLength: padsToMaxLength))
    }

    public func encode(_ text: String) -> (ids: [Int32], mask: [Int32]) {
        specials.encode(text, template: template) { text in
            (charsmap?.normalize(text) ?? text).unicodeScalars.split(whereSeparator: { $0.properties.isWhitespace })
                .flatMap { segment(["▁"] + Array($0)) }
        }
    }

    /// The best-scoring segmentation of one word (Viterbi over the piece lattice, scalar positions).
    func segment(_ word: [Unicode.Scalar]) -> [Int32] {
        var best = [(score: Double, start: Int, id: Int32)?](repeating: nil, count: word.count + 1)
        best[0] = (0, 0, -1)
        for start in 0..<word.count {
            guard let here = best[start]?.score else { continue }
            var coversOne = false
            for length in 1...min(longestPiece, word.count - start) {
                let candidate = String(String.UnicodeScalarView(word[start..<(start + length)]))
                guard let (id, score) = pieces[candidate] else { continue }
                coversOne = coversOne || length == 1
                if best[start + length].map({ here + score > $0.score }) ?? true { best[start + length] = (here + score, start, id) }
            }
            if !coversOne, best[start + 1].map({ here + unknownScore > $0.score }) ?? true {
                best[start + 1] = (here + unknownScore, start, unknownToken)
            }
        }
        var ids: [Int32] = [], end = word.count
        while end > 0, let node = best[end] {
            if !(node.id == unknownToken && ids.last == unknownToken) { ids.append(node.id) }  // fuse runs of <unk>
            end = node.start
        }
        return ids.reversed()
    }
}
