import Foundation
import KinemaTensor

/// A frozen text encoder with its tokenizer, from a transformers folder of any family Kinema reads, told apart by
/// config.json's `model_type`: BERT (all-MiniLM-L6-v2, the offline default), T5 (T5EncoderModel; PixArt's and
/// Open-Sora's T5-v1.1-XXL) or CLIP (CLIPTextModel, or a whole CLIPModel's text half).
public final class TextEncoder {
    public enum Model {
        case bert(BertEncoder), t5(T5Encoder), clip(CLIPTextEncoder)
    }

    public let folder: String
    public let model: Model
    public var tokenizer: any CaptionTokenizer

    /// The width of the caption states.
    public var width: Int {
        switch model {
        case .bert(let bert): return bert.config.hiddenSize
        case .t5(let t5): return t5.config.dModel
        case .clip(let clip): return clip.config.hiddenSize
        }
    }

    /// The most tokens the encoder takes (T5's relative positions have no limit; 512 is its tokenizers' default).
    public var maxPositions: Int {
        switch model {
        case .bert(let bert): return bert.config.maxPositions
        case .t5: return 512
        case .clip(let clip): return clip.config.maxPositions
        }
    }

    public var vocabularySize: Int {
        switch model {
        case .bert(let bert): return bert.config.vocabSize
        case .t5(let t5): return t5.config.vocabSize
        case .clip(let clip): return clip.config.vocabSize
        }
    }

    public init(folder: String, backend: any Backend, dtype: DType = .f32) throws {
        let configPath = URL(fileURLWithPath: folder).appendingPathComponent("config.json").path
        guard let data = FileManager.default.contents(atPath: configPath),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ModelError.badCheckpoint(path: folder, reason: "no text encoder here (config.json is missing or "
                + "unreadable). The default, all-MiniLM-L6-v2, is installed by `scripts/fetch-minilm` (make demo runs "
                + "it); or pass a transformers BERT, T5 or CLIP text model folder")
        }
        self.folder = folder
        switch json["model_type"] as? String {
        case "bert":
            model = .bert(try BertCheckpoint.load(folder: folder, backend: backend, dtype: dtype))
            tokenizer = try WordPieceTokenizer(folder: folder)
        case "t5", "mt5", "umt5":
            model = .t5(try T5Checkpoint.load(folder: folder, backend: backend, dtype: dtype))
            tokenizer = try UnigramTokenizer(folder: folder)
        case "clip", "clip_text_model":
            model = .clip(try CLIPTextCheckpoint.load(folder: folder, backend: backend, dtype: dtype))
            tokenizer = try ByteLevelBPETokenizer(folder: folder)
        case let other:
            throw ModelError.badCheckpoint(path: configPath, reason: "model_type '\(other ?? "none")' is not a text "
                                           + "encoder Kinema reads (bert, t5, clip, clip_text_model)")
        }
        let largest = tokenizer.template.pad
        guard Int(max(largest, tokenizer.template.suffix, tokenizer.template.prefix ?? 0)) < vocabularySize else {
            throw ModelError.badCheckpoint(path: folder, reason: "the tokenizer's special ids exceed the encoder's "
                                           + "vocabulary of \(vocabularySize)")
        }
    }

    /// input_ids i32 [B, L] (the same ids on the host in `hostIDs`: CLIP pools at each row's end-of-text token) and
    /// attention_mask (nil = every token) → last_hidden_state [B, L, D] and, for BERT and CLIP, pooler_output [B, D].
    public func forward(inputIDs: Tensor, hostIDs: [Int32], attentionMask: Tensor?) -> (lastHiddenState: Tensor, pooled: Tensor?) {
        switch model {
        case .bert(let bert):
            let (last, pooled) = bert.forward(inputIDs: inputIDs, attentionMask: attentionMask)
            return (last, pooled)
        case .t5(let t5):
            return (t5.forward(inputIDs: inputIDs, attentionMask: attentionMask), nil)
        case .clip(let clip):
            let (last, pooled) = clip.forward(inputIDs: inputIDs, ids: hostIDs, attentionMask: attentionMask)
            return (last, pooled)
        }
    }
}
