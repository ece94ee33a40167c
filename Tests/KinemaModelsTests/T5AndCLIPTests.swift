import Foundation
import KinemaCPU
import KinemaModels
import KinemaTensor
import KinemaTestSupport
import XCTest

/// T5 and CLIP text encoders against transformers' T5EncoderModel and CLIPTextModel (scripts/make_golden_text.py:
/// random weights, small configs, a padded row), in f32.
final class T5AndCLIPTests: XCTestCase {
    let backend = CPUBackend()

    func assertMatches(_ ours: Tensor, _ name: String, in io: SafetensorsFile, file: StaticString = #filePath,
                       line: UInt = #line) throws {
        let error = relativeError(backend.download(ours), try io.floats(name))
        XCTAssertLessThan(error, 1e-4, "\(name) differs from transformers by \(error)", file: file, line: line)
    }

    func testT5GatedGELUMatchesTransformers() throws {
        let model = try T5Checkpoint.load(folder: Fixtures.url("t5").path, backend: backend)
        XCTAssertEqual(model.config, T5Config(vocabSize: 160, dModel: 32, keyValueDim: 8, feedForwardDim: 37, layers: 2,
                                              heads: 3, relativeBuckets: 8, relativeMaxDistance: 20,
                                              activation: .geluNew, gated: true))
        let io = try SafetensorsFile(url: Fixtures.url("t5_io.safetensors"))
        let hidden = model.forward(inputIDs: try io.tensor("input_ids", on: backend),
                                   attentionMask: try io.tensor("attention_mask", on: backend))
        XCTAssertEqual(hidden.shape, [2, 11, 32])
        try assertMatches(hidden, "last_hidden_state", in: io)
    }

    func testT5ReLUMatchesTransformers() throws {
        let io = try SafetensorsFile(url: Fixtures.url("t5_relu_io.safetensors"))
        let model = T5Encoder(config: T5Config(vocabSize: 160, dModel: 32, keyValueDim: 8, feedForwardDim: 37, layers: 2,
                                               heads: 3, relativeBuckets: 8, relativeMaxDistance: 20),
                              backend: backend)
        try model.arena.loadParameters(from: "t5_relu_io.safetensors", expected: "the relu T5") {
            try io.tensor("weights." + $0, on: backend)
        }
        let hidden = model.forward(inputIDs: try io.tensor("input_ids", on: backend),
                                   attentionMask: try io.tensor("attention_mask", on: backend))
        try assertMatches(hidden, "last_hidden_state", in: io)
    }

    /// transformers' bidirectional buckets for 32 buckets up to distance 128 (T5's defaults), written out.
    func testT5RelativeBuckets() {
        let config = T5Config(vocabSize: 1, dModel: 1, keyValueDim: 1, feedForwardDim: 1, layers: 1, heads: 1)
        let offsets = [-200, -128, -100, -40, -16, -9, -8, -7, -1, 0, 1, 7, 8, 9, 16, 40, 100, 127, 128, 500]
        let expected = [15, 15, 15, 12, 10, 8, 8, 7, 1, 0, 17, 23, 24, 24, 26, 28, 31, 31, 31, 31]
        XCTAssertEqual(offsets.map { config.relativeBucket(query: 300, key: 300 + $0) }, expected)
    }

    func testCLIPTextMatchesTransformers() throws {
        let model = try CLIPTextCheckpoint.load(folder: Fixtures.url("clip").path, backend: backend)
        XCTAssertEqual(model.config, CLIPTextConfig(vocabSize: 814, hiddenSize: 32, intermediateSize: 37, layers: 2,
                                                    heads: 4, maxPositions: 16, eosTokenID: 813))
        let io = try SafetensorsFile(url: Fixtures.url("clip_io.safetensors"))
        let ids = try io.tensor("input_ids", on: backend)
        let hostIDs = backend.download(ids).map { Int32($0) }
        let mask = try io.tensor("attention_mask", on: backend)
        let (hidden, pooled) = model.forward(inputIDs: ids, ids: hostIDs, attentionMask: mask)
        XCTAssertEqual(hidden.shape, [2, 12, 32])
        try assertMatches(hidden, "last_hidden_state", in: io)
        try assertMatches(pooled, "pooler_output", in: io)
        // The same weights with a legacy config (eos_token_id 2) pool at the largest id.
        var legacy = model.config
        legacy.eosTokenID = 2
        let old = CLIPTextEncoder(config: legacy, backend: backend)
        for (target, source) in zip(old.parameters, model.parameters) { backend.copy(source.value, into: target.weights) }
        old.arena.refreshValuesFromMaster()
        try assertMatches(old.forward(inputIDs: ids, ids: hostIDs, attentionMask: mask).pooled, "pooler_output_legacy",
                          in: io)
    }
}
