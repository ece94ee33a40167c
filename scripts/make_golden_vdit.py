#!/usr/bin/env python3
"""Golden fixture for Kinema's video DiT (adaLN-zero), made by OpenDiT's own vDiT (PyTorch, CPU, float32):

    git clone https://github.com/NUS-HPC-AI-Lab/OpenDiT && git -C OpenDiT checkout 9ca5472   # DiT(use_video=True)
    pip install torch timm einops safetensors numpy
    python3 scripts/make_golden_vdit.py --opendit OpenDiT --out Tests/Fixtures

Only the model's own files are loaded from the checkout (opendit/models/dit.py, modules/block.py, modules/attn.py,
embed/{patch,pos,time,label}_emb.py). Stubbed: sequence parallelism (never enabled here) and the text encoder
inside its TextEmbedder: OpenDiT runs CLIP there and projects the pooled output with `output_projection`; the stub
keeps that projection and takes the pooled vector as input, so the fixture holds the pooled caption as `y`
(Kinema's adaLN-zero video DiT reads it as a one-token caption).

Writes vdit_io.safetensors: a vDiT with 2×2×2 patches (hidden 32, depth 2, 4 heads, learn_sigma, 3D input
(4, 8, 8) of 4 channels, 24-wide pooled captions), every parameter N(0, 0.05²) so the zero-initialised adaLN and
final layer take part, its state dict under `weights.` as OpenDiT names it (Conv3d patch kernel), and x [2, 4, 4, 8, 8],
t [2], y [2, 24] and `out`.
"""

import argparse
import os

import torch
from safetensors.torch import save_file

from golden_stubs import load_modules, stub, unused


class PooledTextEmbedder(torch.nn.Module):
    """OpenDiT's TextEmbedder without its CLIP: the pooled vector in, output_projection applied."""

    def __init__(self, path, hidden_size, dropout_prob=0.1):
        super().__init__()
        self.output_projection = torch.nn.Linear(int(path), hidden_size)

    def forward(self, pooled, train, force_drop_ids=None):
        return self.output_projection(pooled)


def load_opendit(root):
    for package in ["opendit", "opendit.models", "opendit.modules", "opendit.embed", "opendit.utils"]:
        stub(package)
    stub("opendit.utils.operation", AllGather=unused, AsyncAllGatherForTwo=unused, all_to_all_comm=unused,
         gather_forward_split_backward=unused)
    stub("opendit.embed.clip_text_emb", TextEmbedder=PooledTextEmbedder)
    return load_modules(root, ["opendit.modules.attn", "opendit.modules.block", "opendit.embed.patch_emb",
                               "opendit.embed.pos_emb", "opendit.embed.time_emb", "opendit.embed.label_emb",
                               "opendit.models.dit"]).DiT


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--opendit", required=True, help="an OpenDiT checkout at commit 9ca5472")
    parser.add_argument("--out", default="Tests/Fixtures")
    args = parser.parse_args()
    DiT = load_opendit(args.opendit)
    torch.manual_seed(0)
    model = DiT(input_size=(4, 8, 8), patch_size=(2, 2, 2), in_channels=4, hidden_size=32, depth=2, num_heads=4,
                learn_sigma=True, use_video=True, text_encoder="24").eval()
    g = torch.Generator().manual_seed(41)
    with torch.no_grad():
        for _, tensor in model.named_parameters():
            tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.05)
        x = torch.randn(2, 4, 4, 8, 8, generator=g)
        t = torch.tensor([17.0, 640.0])
        y = torch.randn(2, 24, generator=g)
        out = model(x, t, y)
    state = {f"weights.{k}": v.contiguous() for k, v in model.state_dict().items() if not k.startswith("pos_embed")}
    save_file({**state, "x": x, "t": t, "y": y, "out": out.contiguous()}, os.path.join(args.out, "vdit_io.safetensors"))
    print(f"vdit: {sum(p.numel() for p in model.parameters())} parameters, out {tuple(out.shape)}, "
          f"{len(state)} state tensors: {sorted(state)[:6]}")


if __name__ == "__main__":
    main()
