import Foundation
import KinemaModels
import KinemaTestSupport
import XCTest

/// T5's unigram and CLIP's byte-level BPE tokenizers against transformers (tokenizers) on the tricky strings of
/// scripts/make_golden_text.py: accents composed and not, full-width and ideographic spaces, CJK, emoji, control
/// characters, special tokens written in the text, truncation.
final class TokenizerGoldenTests: XCTestCase {
    struct Golden: Decodable {
        struct Case: Decodable { let text: String, ids: [Int32], sentencepiece: [Int32]? }
        let maxLength: Int
        let cases: [Case]
    }

    func golden(_ folder: String) throws -> Golden {
        try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Fixtures.url("\(folder)/golden.json")))
    }

    func assertIDs(_ tokenizer: some CaptionTokenizer, _ golden: Golden, _ source: String) {
        for item in golden.cases {
            let (ids, mask) = tokenizer.encode(item.text)
            XCTAssertEqual(ids, item.ids, "\(source): ids of \(item.text.debugDescription)")
            XCTAssertEqual(mask, [Int32](repeating: 1, count: ids.count))
        }
    }

    func testT5FromTokenizerJSONMatchesTokenizers() throws {
        let golden = try golden("t5")
        let tokenizer = try UnigramTokenizer(folder: Fixtures.url("t5").path, maxLength: golden.maxLength)
        XCTAssertEqual(tokenizer.template, SequenceTemplate(prefix: nil, suffix: 1, pad: 0, maxLength: golden.maxLength))
        assertIDs(tokenizer, golden, "tokenizer.json")
    }

    /// spiece.model alone (as published T5 checkpoints ship it), read through the protobuf and converted as
    /// transformers converts it: the same ids.
    func testT5FromSentencePieceModelMatchesTokenizers() throws {
        let golden = try golden("t5")
        let folder = Fixtures.temporaryDirectory("kinema-spiece")
        try FileManager.default.copyItem(at: Fixtures.url("t5/spiece.model"),
                                         to: folder.appendingPathComponent("spiece.model"))
        let tokenizer = try UnigramTokenizer(folder: folder.path, maxLength: golden.maxLength)
        assertIDs(tokenizer, golden, "spiece.model")
        // Where no special token is written in the text, sentencepiece itself agrees.
        for item in golden.cases where !item.text.contains("</s>") {
            XCTAssertEqual(item.ids, item.sentencepiece, "sentencepiece ids of \(item.text.debugDescription)")
        }
    }

    func testT5PadsToTheTemplateLength() throws {
        let tokenizer = try UnigramTokenizer(folder: Fixtures.url("t5").path, maxLength: 8, padsToMaxLength: true)
        let (ids, mask) = tokenizer.encode("a red square")
        XCTAssertEqual(ids.count, 8)
        XCTAssertEqual(ids.last, 0)
        XCTAssertEqual(mask.filter { $0 == 1 }.count, ids.firstIndex(of: 1)! + 1)
        let long = tokenizer.encode(String(repeating: "moving left ", count: 20))
        XCTAssertEqual(long.ids.count, 8)
        XCTAssertEqual(long.ids.last, 1, "a cut sequence still ends with </s>")
    }

    func testMalformedSentencePieceModelIsReported() throws {
        let folder = Fixtures.temporaryDirectory("kinema-bad-spiece")
        try Data([0x0A, 0xFF, 0xFF]).write(to: folder.appendingPathComponent("spiece.model"))
        XCTAssertThrowsError(try UnigramTokenizer(folder: folder.path)) { error in
            XCTAssertTrue("\(error)".contains("spiece.model"), "\(error)")
        }
    }
}

extension TokenizerGoldenTests {
    func testCLIPFromTokenizerJSONMatchesTokenizers() throws {
        let golden = try golden("clip")
        let tokenizer = try ByteLevelBPETokenizer(folder: Fixtures.url("clip").path)
        XCTAssertEqual(tokenizer.template, SequenceTemplate(prefix: 812, suffix: 813, pad: 813, maxLength: 77))
        assertIDs(tokenizer, golden, "tokenizer.json")
    }

    /// vocab.json and merges.txt alone, as older CLIP checkpoints ship them: the same ids.
    func testCLIPFromVocabAndMergesMatchesTokenizers() throws {
        let golden = try golden("clip")
        let folder = Fixtures.temporaryDirectory("kinema-clip-bpe")
        for name in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: Fixtures.url("clip/\(name)"), to: folder.appendingPathComponent(name))
        }
        assertIDs(try ByteLevelBPETokenizer(folder: folder.path, maxLength: golden.maxLength), golden, "vocab.json")
    }
}
