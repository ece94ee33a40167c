import Foundation
import KinemaCPU
import KinemaModels
import KinemaTensor
import KinemaTestSupport
import XCTest

/// BERT against transformers' BertModel (scripts/make_golden_text.py: random weights, a padded row) and the WordPiece
/// tokenizer against `tokenizers` on all-MiniLM-L6-v2's vocabulary (accents, CJK, special tokens written in the text,
/// control characters, truncation).
final class TextEncoderTests: XCTestCase {
    let backend = CPUBackend()

    func testBertMatchesTransformers() throws {
        let model = try BertCheckpoint.load(folder: Fixtures.url("bert").path, backend: backend)
        XCTAssertEqual(model.config, BertConfig(vocabSize: 99, hiddenSize: 32, layers: 2, heads: 4, intermediateSize: 37,
                                                maxPositions: 64))
        let io = try SafetensorsFile(url: Fixtures.url("bert_io.safetensors"))
        let (hidden, pooled) = model.forward(inputIDs: try io.tensor("input_ids", on: backend),
                                             attentionMask: try io.tensor("attention_mask", on: backend))
        XCTAssertEqual(hidden.shape, [2, 9, 32])
        let error = relativeError(backend.download(hidden), try io.floats("last_hidden_state"))
        XCTAssertLessThan(error, 1e-4, "last_hidden_state differs from transformers by \(error)")
        let poolError = relativeError(backend.download(pooled), try io.floats("pooler_output"))
        XCTAssertLessThan(poolError, 1e-4, "pooler_output differs from transformers by \(poolError)")
    }

    struct Golden: Decodable {
        struct Case: Decodable { let text: String, ids: [Int32], mask: [Int32] }
        let maxLength: Int
        let cases: [Case]
    }

    func golden() throws -> Golden {
        try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Fixtures.url("wordpiece/golden.json")))
    }

    /// Read as `tokenizers` reads it: a tokenizer.json (written here from the vocabulary) with truncation at 128.
    func testWordPieceFromTokenizerJSONMatchesTokenizers() throws {
        let golden = try golden()
        let plain = try WordPieceTokenizer(folder: Fixtures.url("wordpiece").path)
        let folder = Fixtures.temporaryDirectory("kinema-wordpiece")
        let json: [String: Any] = [
            "truncation": ["max_length": golden.maxLength, "strategy": "LongestFirst"],
            "normalizer": ["type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                           "lowercase": true],
            "model": ["type": "WordPiece", "unk_token": "[UNK]", "max_input_chars_per_word": 100,
                      "vocab": plain.vocabulary.mapValues { Int($0) }],
        ]
        try JSONSerialization.data(withJSONObject: json).write(to: folder.appendingPathComponent("tokenizer.json"))
        let tokenizer = try WordPieceTokenizer(folder: folder.path)
        XCTAssertEqual(tokenizer.maxLength, golden.maxLength)
        XCTAssertFalse(tokenizer.padsToMaxLength)
        for item in golden.cases {
            let (ids, mask) = tokenizer.encode(item.text)
            XCTAssertEqual(ids, item.ids, "token ids of \(item.text.debugDescription)")
            XCTAssertEqual(mask, item.mask, "mask of \(item.text.debugDescription)")
        }
    }

    /// Read from vocab.txt and tokenizer_config.json (BERT's defaults, 512 tokens): the same ids where the golden
    /// text was not truncated; a batch pads to its longest row.
    func testWordPieceFromVocabularyFileAndBatches() throws {
        let tokenizer = try WordPieceTokenizer(folder: Fixtures.url("wordpiece").path)
        XCTAssertEqual(tokenizer.vocabulary.count, 30522)
        XCTAssertEqual(tokenizer.maxLength, 512)
        let cases = try golden().cases.filter { $0.ids.count < 128 }
        XCTAssertGreaterThan(cases.count, 15)
        for item in cases {
            XCTAssertEqual(tokenizer.encode(item.text).ids, item.ids, "token ids of \(item.text.debugDescription)")
        }
        let batch = tokenizer.encode(batch: ["a red square", "a blue circle moving up quickly"])
        XCTAssertEqual(batch.length, 8)
        XCTAssertEqual(batch.mask, [1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
        XCTAssertEqual(Array(batch.ids[3..<8]), [2675, 102, 0, 0, 0])
    }

    func testExactGELU() {
        let x = backend.upload([-3.0, -0.5, 0, 1, 2.5], shape: [5], dtype: .f64)
        let want = [-0.004049694, -0.154268769, 0, 0.841344746, 2.484475837]
        let got = backend.downloadDouble(backend.unary(.geluErf, x))
        for (a, b) in zip(got, want) { XCTAssertEqual(a, b, accuracy: 1e-8) }
        // ReLU and CLIP's quick GELU, x·σ(1.702x), on the same points.
        XCTAssertEqual(backend.downloadDouble(backend.unary(.relu, x)), [0, 0, 0, 1, 2.5])
        let quick = [-0.018071310, -0.149611563, 0, 0.845795766, 2.465013835]
        for (a, b) in zip(backend.downloadDouble(backend.unary(.quickGelu, x)), quick) { XCTAssertEqual(a, b, accuracy: 1e-8) }
    }
}
