#!/usr/bin/env python3
"""Golden fixtures for Kinema's text-conditioned transformers, made by diffusers (0.42.1) with random weights on
small configs, on the CPU in float32:

    pip install torch diffusers safetensors numpy
    python3 scripts/make_golden_video.py --out Tests/Fixtures

Writes, per model, a diffusers folder (config.json + diffusion_pytorch_model.safetensors, via save_pretrained) and
an io file with inputs and outputs:

* pixart/ and pixart_io.safetensors: PixArtTransformer2DModel (adaLN-single, cross-attention to projected captions),
  run at its sample size and at a non-square size it was not built for (the positional embedding is rescaled), with
  a caption mask that drops trailing tokens.
* latte/ and latte_io.safetensors: LatteTransformer3DModel (PixArt's blocks per frame, a temporal block after each),
  3 frames at the sample size and at a non-square one. No caption mask: diffusers' Latte passes the [B, L] mask to
  the per-frame blocks without repeating it per frame, so it only runs with one video a batch.

* vae/ and vae_io.safetensors: AutoencoderKL (SD-VAE blocks, 2 levels of 32/64 channels, 8 groups), encoding images
  (latent mean and log-variance) and decoding latents, at 16×16 and 16×24 (every parameter redrawn: N(0, 0.1²), norm
  weights 1 + N(0, 0.05²)); and tiled decoding (enable_tiling) of 12×20 latents in 8×8 tiles.

Every parameter of the transformers is re-drawn from N(0, 0.05²) (biases and modulation tables included, so no path is zero). The script
is deterministic (seeded torch.Generator per section) and prints what it wrote.
"""

import argparse
import os

import torch
from safetensors.torch import save_file

PARAM_STD = 0.05


# The shape PixArt's and Latte's fixtures share: 2 layers of 2 heads × 8, patch 2, captions 12 wide, learned sigma.
TINY_BLOCKS = dict(
    num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, cross_attention_dim=16,
    attention_bias=True, sample_size=8, patch_size=2, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
    norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=12)


def randomize_(module, g):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * PARAM_STD)


def make_pixart(out):
    from diffusers import PixArtTransformer2DModel

    g = torch.Generator().manual_seed(20)
    model = PixArtTransformer2DModel(**TINY_BLOCKS, use_additional_conditions=False).eval()
    randomize_(model, g)
    model.save_pretrained(os.path.join(out, "pixart"), safe_serialization=True)
    io = {}
    for label, (h, w) in (("square", (8, 8)), ("wide", (6, 12))):
        x = torch.randn(2, 4, h, w, generator=g)
        t = torch.tensor([3.0, 870.0])
        captions = torch.randn(2, 5, 12, generator=g)
        mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
        with torch.no_grad():
            sample = model(x, encoder_hidden_states=captions, timestep=t, encoder_attention_mask=mask,
                           added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        io.update({f"{label}_x": x, f"{label}_t": t, f"{label}_captions": captions,
                   f"{label}_mask": mask.to(torch.int32), f"{label}_out": sample})
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out, "pixart_io.safetensors"))
    print("pixart:", {k: list(v.shape) for k, v in io.items()})


def make_latte(out):
    from diffusers import LatteTransformer3DModel

    g = torch.Generator().manual_seed(30)
    model = LatteTransformer3DModel(**TINY_BLOCKS, video_length=3).eval()
    randomize_(model, g)
    model.save_pretrained(os.path.join(out, "latte"), safe_serialization=True)
    io = {}
    for label, (h, w) in (("square", (8, 8)), ("wide", (6, 10))):
        x = torch.randn(2, 4, 3, h, w, generator=g)
        t = torch.tensor([10.0, 640.0])
        captions = torch.randn(2, 5, 12, generator=g)
        with torch.no_grad():
            sample = model(x, timestep=t, encoder_hidden_states=captions).sample
        io.update({f"{label}_x": x, f"{label}_t": t, f"{label}_captions": captions, f"{label}_out": sample})
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out, "latte_io.safetensors"))
    print("latte:", {k: list(v.shape) for k, v in io.items()})


def make_vae(out):
    from diffusers import AutoencoderKL

    g = torch.Generator().manual_seed(22)
    model = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
                          latent_channels=4, norm_num_groups=8, sample_size=16).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            p.copy_(base + torch.randn(p.shape, generator=g) * (0.1 if base == 0 else 0.05))
    model.save_pretrained(os.path.join(out, "vae"), safe_serialization=True)
    io = {}
    for label, (h, w) in (("square", (16, 16)), ("wide", (16, 24))):
        image = torch.rand(2, 3, h, w, generator=g) * 2 - 1
        latent = torch.randn(2, 4, h // 2, w // 2, generator=g)
        with torch.no_grad():
            dist = model.encode(image).latent_dist
            decoded = model.decode(latent).sample
        io.update({f"{label}_image": image, f"{label}_latent_mean": dist.mean.contiguous(),
                   f"{label}_latent_logvar": dist.logvar.contiguous(), f"{label}_latent": latent,
                   f"{label}_decoded": decoded.contiguous()})
    # Tiled decoding (diffusers' enable_tiling): latents bigger than a tile (sample_size 16 / 2 = 8), 2 × 4 tiles.
    latent = torch.randn(1, 4, 12, 20, generator=g)
    model.enable_tiling()
    with torch.no_grad():
        io.update({"tiled_latent": latent, "tiled_decoded": model.decode(latent).sample.contiguous()})
    save_file(io, os.path.join(out, "vae_io.safetensors"))
    print(f"vae: {sum(p.numel() for p in model.parameters())} parameters, square and wide images")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float32)
    make_pixart(args.out)
    make_latte(args.out)
    make_vae(args.out)


if __name__ == "__main__":
    main()
