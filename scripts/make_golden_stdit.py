#!/usr/bin/env python3
"""Golden fixture for Kinema's STDiT, made by Open-Sora 1.0's own STDiT (PyTorch, CPU, float32):

    git clone https://github.com/hpcaitech/Open-Sora && git -C Open-Sora checkout 49d5edd   # STDiT v1, last kept
    pip install torch timm einops safetensors numpy
    python3 scripts/make_golden_stdit.py --opensora Open-Sora --out Tests/Fixtures

Only opensora/models/stdit/stdit.py and opensora/models/layers/blocks.py are loaded, from their files. What they import
for training at scale is stubbed: sequence parallelism (never enabled here), gradient checkpointing (a plain call),
the model registry. xformers, which their cross-attention calls, is replaced by the same operation written in
PyTorch: softmax(q kᵀ / √d) v with a block-diagonal mask from the per-sample caption lengths (xformers'
BlockDiagonalMask), so each video attends to its own caption tokens only.

Writes stdit_io.safetensors: an STDiT (hidden 32, depth 2, 4 heads, 24-channel captions of 7 tokens, space_scale 0.5,
time_scale 2, patch (1, 2, 2), pred_sigma) with every parameter and buffer N(0, 0.05²) (so the zero-initialised
projections take part), its state dict under `weights.` as Open-Sora names it (packed qkv, Conv3d patch kernel,
y_embedding), and x [2, 4, 3, 8, 8], t [2], y [2, 1, 7, 24], mask [2, 7] (the second caption 4 tokens) and `out`.
"""

import argparse
import math
import os
import sys
import types

import torch
from safetensors.torch import save_file

from golden_stubs import load_modules, stub, unused


class BlockDiagonalMask:
    def __init__(self, q_seqlen, kv_seqlen):
        self.q_seqlen, self.kv_seqlen = list(q_seqlen), list(kv_seqlen)

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_seqlen=None):
        return cls(q_seqlen, kv_seqlen if kv_seqlen is not None else q_seqlen)

    def dense(self):
        mask = torch.zeros(sum(self.q_seqlen), sum(self.kv_seqlen), dtype=torch.bool)
        q0 = k0 = 0
        for q, k in zip(self.q_seqlen, self.kv_seqlen):
            mask[q0:q0 + q, k0:k0 + k] = True
            q0, k0 = q0 + q, k0 + k
        return mask


def memory_efficient_attention(q, k, v, p=0.0, attn_bias=None):
    """xformers' layout: [B, N, H, Dh] in and out."""
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(q.shape[-1])
    if attn_bias is not None:
        scores = scores.masked_fill(~attn_bias.dense(), float("-inf"))
    return torch.einsum("bhnm,bmhd->bnhd", scores.softmax(dim=-1), v).contiguous()


def load_opensora(root):
    stub("xformers")
    stub("xformers.ops", memory_efficient_attention=memory_efficient_attention,
         fmha=types.SimpleNamespace(BlockDiagonalMask=BlockDiagonalMask))
    sys.modules["xformers"].ops = sys.modules["xformers.ops"]
    for package in ["opensora", "opensora.models", "opensora.models.layers", "opensora.models.stdit",
                    "opensora.acceleration", "opensora.utils"]:
        stub(package)
    stub("opensora.acceleration.checkpoint", auto_grad_checkpoint=lambda module, *args, **kwargs: module(*args, **kwargs))
    stub("opensora.acceleration.communications", all_to_all=unused, split_forward_gather_backward=unused,
         gather_forward_split_backward=unused)
    stub("opensora.acceleration.parallel_states", get_sequence_parallel_group=lambda: None)
    stub("opensora.registry", MODELS=types.SimpleNamespace(register_module=lambda *a, **k: (lambda cls: cls)))
    stub("opensora.utils.ckpt_utils", load_checkpoint=unused)
    return load_modules(root, ["opensora.models.layers.blocks", "opensora.models.stdit.stdit"]).STDiT


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--opensora", required=True, help="an Open-Sora checkout at commit 49d5edd")
    parser.add_argument("--out", default="Tests/Fixtures")
    args = parser.parse_args()
    STDiT = load_opensora(args.opensora)
    torch.manual_seed(0)
    model = STDiT(input_size=(3, 8, 8), in_channels=4, patch_size=(1, 2, 2), hidden_size=32, depth=2, num_heads=4,
                  caption_channels=24, model_max_length=7, space_scale=0.5, time_scale=2.0).eval()
    g = torch.Generator().manual_seed(40)
    with torch.no_grad():
        for _, tensor in list(model.named_parameters()) + [("y_embedding", model.y_embedder.y_embedding)]:
            tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.05)
        x = torch.randn(2, 4, 3, 8, 8, generator=g)
        t = torch.tensor([17.0, 640.0])
        y = torch.randn(2, 1, 7, 24, generator=g)
        mask = torch.ones(2, 7, dtype=torch.long)
        mask[1, 4:] = 0
        out = model(x, t, y, mask=mask)
    state = {f"weights.{k}": v.contiguous() for k, v in model.state_dict().items()
             if not k.startswith("pos_embed")}  # the sin-cos buffers are recomputed, not loaded
    save_file({**state, "x": x, "t": t, "y": y.squeeze(1).contiguous(), "mask": mask.to(torch.int32),
               "out": out.contiguous()}, os.path.join(args.out, "stdit_io.safetensors"))
    print(f"stdit: {sum(p.numel() for p in model.parameters())} parameters, out {tuple(out.shape)}, "
          f"{len(state)} state tensors")


if __name__ == "__main__":
    main()
