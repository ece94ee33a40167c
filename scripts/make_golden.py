#!/usr/bin/env python3
"""Generate the golden reference fixtures for Kinema's Swift tests.

Oracles
-------
* facebookresearch/DiT (models.py + diffusion/), imported from a local copy
  given by --dit-repo.  Nothing from it is committed to this repository.
* diffusers (DiTTransformer2DModel, DDPMScheduler, DDIMScheduler).

How to run
----------
    pip install torch diffusers timm safetensors numpy
    # get the original DiT sources (models.py and the diffusion/ package), e.g.
    git clone https://github.com/facebookresearch/DiT /tmp/DiT-git
    mkdir -p /tmp/dit-ref/diffusion
    cp /tmp/DiT-git/models.py /tmp/dit-ref/
    cp /tmp/DiT-git/diffusion/*.py /tmp/dit-ref/diffusion/
    # (the fixtures in this repo were made from DiT commit ed81ce2,
    #  torch 2.15 CPU, diffusers 0.42.1, timm 1.0.31)
    python3 scripts/make_golden.py --dit-repo /tmp/dit-ref --out Tests/Fixtures

Everything runs on CPU, float32 for the networks and diffusers schedulers,
float64 for the DiT Gaussian-diffusion fixtures, seeded with torch.Generator
per section.  The script asserts every cross-check it makes and prints a
manifest of what it wrote.  See scripts/README-golden.md for the weight-name
mapping and formula details.
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

torch.set_default_dtype(torch.float32)

PARAM_STD = 0.05


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #

def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(shape, g, dtype=torch.float32):
    return torch.randn(*shape, generator=g, dtype=torch.float32).to(dtype)


def save(tensors, path, metadata=None):
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    save_file(tensors, path, metadata=metadata)
    # round-trip check
    back = load_file(path)
    assert set(back) == set(tensors)
    for k in tensors:
        assert back[k].dtype == tensors[k].dtype and torch.equal(back[k], tensors[k]), k


def randomize_(module, g, skip=()):
    """Overwrite every parameter (weights AND biases) with N(0, PARAM_STD^2)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in skip:
                continue
            p.copy_(torch.randn(p.shape, generator=g) * PARAM_STD)


def max_abs(a, b):
    return (a.double() - b.double()).abs().max().item()


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


# --------------------------------------------------------------------------- #
# 1. original DiT model
# --------------------------------------------------------------------------- #

DIT_CONFIG = dict(
    input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2,
    num_heads=4, mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=10,
    learn_sigma=True,
)


def make_original(out, DiT):
    g = gen(1)
    model = DiT(**DIT_CONFIG)
    # DiT zero-inits adaLN + final layer; re-randomize everything except the
    # fixed sin-cos pos_embed (a frozen nn.Parameter that DiT saves in its
    # state_dict; kept at its true value so Swift can also check its own
    # sin-cos generator against it).
    randomize_(model, g, skip=("pos_embed",))
    model.eval()

    x = randn((2, 4, 8, 8), g)
    t = torch.tensor([17.0, 803.0])
    y = torch.tensor([3, 10], dtype=torch.int64)  # 10 == null (CFG) class
    x0 = randn((1, 4, 8, 8), g)
    cfg_x = torch.cat([x0, x0])
    cfg_t = torch.tensor([250.0, 250.0])
    cfg_y = torch.tensor([3, 10], dtype=torch.int64)
    cfg_scale = 4.0
    with torch.no_grad():
        o = model(x, t, y)
        cfg_o = model.forward_with_cfg(cfg_x, cfg_t, cfg_y, cfg_scale)
    assert o.shape == (2, 8, 8, 8) and cfg_o.shape == (2, 8, 8, 8)
    assert o.abs().max() > 1e-2

    sd = model.state_dict()
    save(sd, os.path.join(out, "dit_original_weights.safetensors"),
         metadata={"config": json.dumps(DIT_CONFIG)})
    save(dict(x=x, t=t, y=y, out=o, cfg_x=cfg_x, cfg_t=cfg_t, cfg_y=cfg_y,
              cfg_out=cfg_o),
         os.path.join(out, "dit_original_io.safetensors"),
         metadata={"cfg_scale": str(cfg_scale),
                   "note": "eval mode; out=model(x,t,y); cfg_out=forward_with_cfg "
                           "(guidance on channels 0..2 only, as in DiT)"})

    # reload check
    m2 = DiT(**DIT_CONFIG)
    m2.load_state_dict(load_file(os.path.join(out, "dit_original_weights.safetensors")))
    m2.eval()
    with torch.no_grad():
        assert torch.equal(m2(x, t, y), o)
    print(f"[original DiT] |out|max={o.abs().max():.4f}")


# --------------------------------------------------------------------------- #
# 2. diffusers DiT + name mapping + cross-check
# --------------------------------------------------------------------------- #

DIFFUSERS_CONFIG = dict(
    num_attention_heads=4, attention_head_dim=16, in_channels=4, out_channels=8,
    num_layers=2, dropout=0.0, attention_bias=True, sample_size=8, patch_size=2,
    activation_fn="gelu-approximate", num_embeds_ada_norm=10,
    norm_type="ada_norm_zero", norm_elementwise_affine=False, norm_eps=1e-5,
)
EMB_PREFIX = "norm1.emb."  # per-block copy of the timestep/class embedders


def diffusers_to_original(sd, depth, pos_embed):
    """diffusers DiTTransformer2DModel state_dict -> original DiT state_dict."""
    sd = dict(sd)
    o = {}
    o["pos_embed"] = pos_embed  # not stored by diffusers (non-persistent buffer)
    o["x_embedder.proj.weight"] = sd.pop("pos_embed.proj.weight")
    o["x_embedder.proj.bias"] = sd.pop("pos_embed.proj.bias")
    b0 = "transformer_blocks.0." + EMB_PREFIX
    emb0 = {k[len(b0):]: v for k, v in sd.items() if k.startswith(b0)}
    o["t_embedder.mlp.0.weight"] = sd[b0 + "timestep_embedder.linear_1.weight"]
    o["t_embedder.mlp.0.bias"] = sd[b0 + "timestep_embedder.linear_1.bias"]
    o["t_embedder.mlp.2.weight"] = sd[b0 + "timestep_embedder.linear_2.weight"]
    o["t_embedder.mlp.2.bias"] = sd[b0 + "timestep_embedder.linear_2.bias"]
    o["y_embedder.embedding_table.weight"] = sd[b0 + "class_embedder.embedding_table.weight"]
    for i in range(depth):
        p = f"transformer_blocks.{i}."
        # every block carries its own embedder copy; DiT has one shared copy.
        for s in ("timestep_embedder.linear_1.weight", "timestep_embedder.linear_1.bias",
                  "timestep_embedder.linear_2.weight", "timestep_embedder.linear_2.bias",
                  "class_embedder.embedding_table.weight"):
            assert torch.equal(sd.pop(p + EMB_PREFIX + s), emb0[s]), (i, s)
        q = f"blocks.{i}."
        o[q + "attn.qkv.weight"] = torch.cat(
            [sd.pop(p + f"attn1.to_{n}.weight") for n in "qkv"], 0)
        o[q + "attn.qkv.bias"] = torch.cat(
            [sd.pop(p + f"attn1.to_{n}.bias") for n in "qkv"], 0)
        o[q + "attn.proj.weight"] = sd.pop(p + "attn1.to_out.0.weight")
        o[q + "attn.proj.bias"] = sd.pop(p + "attn1.to_out.0.bias")
        o[q + "mlp.fc1.weight"] = sd.pop(p + "ff.net.0.proj.weight")
        o[q + "mlp.fc1.bias"] = sd.pop(p + "ff.net.0.proj.bias")
        o[q + "mlp.fc2.weight"] = sd.pop(p + "ff.net.2.weight")
        o[q + "mlp.fc2.bias"] = sd.pop(p + "ff.net.2.bias")
        o[q + "adaLN_modulation.1.weight"] = sd.pop(p + "norm1.linear.weight")
        o[q + "adaLN_modulation.1.bias"] = sd.pop(p + "norm1.linear.bias")
    o["final_layer.adaLN_modulation.1.weight"] = sd.pop("proj_out_1.weight")
    o["final_layer.adaLN_modulation.1.bias"] = sd.pop("proj_out_1.bias")
    o["final_layer.linear.weight"] = sd.pop("proj_out_2.weight")
    o["final_layer.linear.bias"] = sd.pop("proj_out_2.bias")
    assert not sd, f"unmapped diffusers keys: {sorted(sd)}"
    return o


def original_to_diffusers(sd, depth):
    """original DiT state_dict -> diffusers DiTTransformer2DModel state_dict."""
    sd = dict(sd)
    sd.pop("pos_embed")
    d = {}
    d["pos_embed.proj.weight"] = sd.pop("x_embedder.proj.weight")
    d["pos_embed.proj.bias"] = sd.pop("x_embedder.proj.bias")
    t1w, t1b = sd.pop("t_embedder.mlp.0.weight"), sd.pop("t_embedder.mlp.0.bias")
    t2w, t2b = sd.pop("t_embedder.mlp.2.weight"), sd.pop("t_embedder.mlp.2.bias")
    yt = sd.pop("y_embedder.embedding_table.weight")
    for i in range(depth):
        p, q = f"transformer_blocks.{i}.", f"blocks.{i}."
        e = p + EMB_PREFIX
        d[e + "timestep_embedder.linear_1.weight"] = t1w
        d[e + "timestep_embedder.linear_1.bias"] = t1b
        d[e + "timestep_embedder.linear_2.weight"] = t2w
        d[e + "timestep_embedder.linear_2.bias"] = t2b
        d[e + "class_embedder.embedding_table.weight"] = yt
        d[p + "norm1.linear.weight"] = sd.pop(q + "adaLN_modulation.1.weight")
        d[p + "norm1.linear.bias"] = sd.pop(q + "adaLN_modulation.1.bias")
        for n, w in zip("qkv", sd.pop(q + "attn.qkv.weight").chunk(3, 0)):
            d[p + f"attn1.to_{n}.weight"] = w
        for n, b in zip("qkv", sd.pop(q + "attn.qkv.bias").chunk(3, 0)):
            d[p + f"attn1.to_{n}.bias"] = b
        d[p + "attn1.to_out.0.weight"] = sd.pop(q + "attn.proj.weight")
        d[p + "attn1.to_out.0.bias"] = sd.pop(q + "attn.proj.bias")
        d[p + "ff.net.0.proj.weight"] = sd.pop(q + "mlp.fc1.weight")
        d[p + "ff.net.0.proj.bias"] = sd.pop(q + "mlp.fc1.bias")
        d[p + "ff.net.2.weight"] = sd.pop(q + "mlp.fc2.weight")
        d[p + "ff.net.2.bias"] = sd.pop(q + "mlp.fc2.bias")
    d["proj_out_1.weight"] = sd.pop("final_layer.adaLN_modulation.1.weight")
    d["proj_out_1.bias"] = sd.pop("final_layer.adaLN_modulation.1.bias")
    d["proj_out_2.weight"] = sd.pop("final_layer.linear.weight")
    d["proj_out_2.bias"] = sd.pop("final_layer.linear.bias")
    assert not sd, f"unmapped original keys: {sorted(sd)}"
    return d


def diffusers_style_timestep_embedding(t, dim, max_period=10000):
    """DiT's TimestepEmbedder.timestep_embedding, but with diffusers'
    frequencies (downscale_freq_shift=1: divide by half-1 instead of half)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / (half - 1))
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def make_diffusers(out, DiT, dit_models_module):
    from diffusers import DiTTransformer2DModel

    g = gen(2)
    dm = DiTTransformer2DModel(**DIFFUSERS_CONFIG)
    randomize_(dm, g)
    depth = DIFFUSERS_CONFIG["num_layers"]
    # Tie the per-block embedder copies to block 0 (what a converted DiT
    # checkpoint looks like; the final layer uses block 0's embedder).
    with torch.no_grad():
        src = dict(dm.transformer_blocks[0].norm1.emb.named_parameters())
        for i in range(1, depth):
            for n, p in dm.transformer_blocks[i].norm1.emb.named_parameters():
                p.copy_(src[n])
    dm.eval()
    assert dm.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight.shape[0] == 11

    x = randn((2, 4, 8, 8), g)
    t = torch.tensor([42.0, 917.0])
    y = torch.tensor([7, 10], dtype=torch.int64)
    with torch.no_grad():
        o = dm(x, timestep=t, class_labels=y).sample
    assert o.shape == (2, 8, 8, 8)

    folder = os.path.join(out, "dit_diffusers")
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    dm.save_pretrained(folder, safe_serialization=True)
    assert sorted(os.listdir(folder)) == ["config.json", "diffusion_pytorch_model.safetensors"]
    dm2 = DiTTransformer2DModel.from_pretrained(folder, low_cpu_mem_usage=False).eval()
    with torch.no_grad():
        assert torch.equal(dm2(x, timestep=t, class_labels=y).sample, o)

    # ---- cross-check: convert to original layout, run the original DiT ----
    dsd = load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    assert "pos_embed.pos_embed" not in dsd  # non-persistent buffer
    grid = int(dm.pos_embed.pos_embed.shape[1] ** 0.5)
    pe = torch.from_numpy(dit_models_module.get_2d_sincos_pos_embed(
        dm.inner_dim, grid)).float().unsqueeze(0)
    pe_err = max_abs(pe, dm.pos_embed.pos_embed)
    assert pe_err < 1e-6, pe_err
    osd = diffusers_to_original(dsd, depth, pe)
    back = original_to_diffusers(osd, depth)
    assert set(back) == set(dsd) and all(torch.equal(back[k], dsd[k]) for k in dsd)

    ocfg = dict(DIT_CONFIG)  # same geometry: hidden 64, 4 heads, 2 blocks, 10 classes
    od = DiT(**ocfg)
    od.load_state_dict(osd, strict=True)
    od.eval()
    with torch.no_grad():
        raw = od(x, t, y)
        raw_err = max_abs(raw, o)
        # Apply the two numerical differences diffusers has (documented in
        # README-golden.md) to the original model; then it must agree exactly
        # up to float32 rounding.
        for blk in od.blocks:
            blk.norm2.eps = DIFFUSERS_CONFIG["norm_eps"]
        with patched(dit_models_module.TimestepEmbedder, "timestep_embedding",
                     staticmethod(diffusers_style_timestep_embedding)):
            matched = od(x, t, y)
        for blk in od.blocks:
            blk.norm2.eps = 1e-6
    m_err = max_abs(matched, o)
    print(f"[diffusers DiT] pos_embed err={pe_err:.2e}  original-DiT(raw) vs diffusers "
          f"max|diff|={raw_err:.3e}  original-DiT(freq shift 1, mlp-norm eps 1e-5) vs "
          f"diffusers max|diff|={m_err:.3e}")
    assert m_err < 2e-5, m_err
    assert raw_err > 10 * m_err  # the documented differences are real

    save(dict(x=x, t=t, y=y, out=o, out_as_original_dit=raw),
         os.path.join(out, "dit_diffusers_io.safetensors"),
         metadata={"note": "out = diffusers DiTTransformer2DModel(x, timestep=t, class_labels=y)"
                           ".sample (eval); out_as_original_dit = original DiT forward with the "
                           "converted weights (DiT timestep freqs /half, mlp-norm eps 1e-6)"})


# --------------------------------------------------------------------------- #
# 3./4. original Gaussian diffusion
# --------------------------------------------------------------------------- #

def extract_f64(arr, timesteps, broadcast_shape):
    """_extract_into_tensor without the .float() downcast (keeps float64)."""
    res = torch.from_numpy(arr).to(device=timesteps.device)[timesteps].to(torch.float64)
    while len(res.shape) < len(broadcast_shape):
        res = res[..., None]
    return res + torch.zeros(broadcast_shape, dtype=torch.float64, device=timesteps.device)


class FakeModel:
    """Returns a fixed output; records the timesteps it was called with."""

    def __init__(self, output):
        self.output = output
        self.calls = []

    def __call__(self, x, t, **kw):
        assert x.shape[0] == self.output.shape[0]
        self.calls.append((x.clone(), t.clone()))
        return self.output


@contextlib.contextmanager
def fixed_randn_like(noise):
    def f(x, *a, **k):
        assert x.shape == noise.shape and x.dtype == noise.dtype
        return noise.clone()
    with patched(torch, "randn_like", f):
        yield


def make_schedule(out, create_diffusion):
    base = create_diffusion(timestep_respacing="")
    assert base.num_timesteps == 1000 and base.timestep_map == list(range(1000))
    r25 = create_diffusion(timestep_respacing="25")
    d25 = create_diffusion(timestep_respacing="ddim25")
    f64 = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64).copy())
    i64 = lambda a: torch.tensor(list(a), dtype=torch.int64)
    tensors = dict(
        betas=f64(base.betas),
        alphas_cumprod=f64(base.alphas_cumprod),
        alphas_cumprod_prev=f64(base.alphas_cumprod_prev),
        posterior_variance=f64(base.posterior_variance),
        posterior_log_variance_clipped=f64(base.posterior_log_variance_clipped),
        posterior_mean_coef1=f64(base.posterior_mean_coef1),
        posterior_mean_coef2=f64(base.posterior_mean_coef2),
        respaced_timestep_map=i64(r25.timestep_map),
        respaced_betas=f64(r25.betas),
        ddim_timestep_map=i64(d25.timestep_map),
        ddim_betas=f64(d25.betas),
    )
    # independent checks
    b = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    # NB: create_diffusion always builds a SpacedDiffusion, whose betas are
    # recomputed as 1 - acp[i]/acp[i-1]; they differ from linspace by rounding.
    beta_err = np.abs(base.betas - b).max()
    assert beta_err < 1e-15, beta_err
    assert np.abs(np.cumprod(1 - b) - base.alphas_cumprod).max() < 1e-15
    assert len(r25.timestep_map) == 25 and len(d25.timestep_map) == 25
    assert d25.timestep_map == list(range(0, 1000, 40))
    assert r25.timestep_map[0] == 0 and r25.timestep_map[-1] == 999
    acp = base.alphas_cumprod[r25.timestep_map]
    assert np.allclose(r25.betas, 1 - acp / np.append(1.0, acp[:-1]), rtol=1e-12, atol=0)
    save(tensors, os.path.join(out, "schedule.safetensors"),
         metadata={"note": "DiT create_diffusion: linear 1e-4..0.02, 1000 steps; respaced '25' "
                           "and 'ddim25'"})
    print(f"[schedule] max|betas - linspace|={beta_err:.2e}; respaced('25') map={r25.timestep_map}")
    return base, r25, d25


def make_diffusion_io(out, base, d25, gd):
    g = gen(4)
    T = {}

    def mo(shape_b):  # model output: eps half randn, var half in [-1, 1]
        eps = randn((shape_b, 4, 8, 8), g, torch.float64)
        v = torch.tanh(randn((shape_b, 4, 8, 8), g, torch.float64))
        return torch.cat([eps, v], 1)

    # ---- training losses (q_sample + MSE + VB) ----
    x_start = randn((2, 4, 8, 8), g, torch.float64)
    t = torch.tensor([0, 500], dtype=torch.int64)
    noise = randn((2, 4, 8, 8), g, torch.float64)
    model_output = mo(2)
    with patched(gd, "_extract_into_tensor", extract_f64):
        x_t = base.q_sample(x_start, t, noise=noise)
        fm = FakeModel(model_output)
        terms = base.training_losses(fm, x_start, t, noise=noise)
    assert x_t.dtype == torch.float64 and terms["loss"].dtype == torch.float64
    assert torch.equal(fm.calls[0][0], x_t) and torch.equal(fm.calls[0][1], t)
    acp = torch.from_numpy(base.alphas_cumprod)[t].view(2, 1, 1, 1)
    assert max_abs(x_t, acp.sqrt() * x_start + (1 - acp).sqrt() * noise) < 1e-14
    mse = ((noise - model_output[:, :4]) ** 2).mean(dim=(1, 2, 3))
    assert max_abs(mse, terms["mse"]) < 1e-14
    assert max_abs(terms["loss"], terms["mse"] + terms["vb"]) == 0
    T.update(x_start=x_start, t=t, noise=noise, model_output=model_output, x_t=x_t,
             loss=terms["loss"], mse=terms["mse"], vb=terms["vb"])

    # same, but the untouched DiT code on float32 inputs (coefficients are
    # float32-rounded by _extract_into_tensor's .float())
    f32 = base.training_losses(FakeModel(model_output.float()), x_start.float(), t,
                               noise=noise.float())
    T.update(f32_x_t=base.q_sample(x_start.float(), t, noise=noise.float()),
             f32_loss=f32["loss"], f32_mse=f32["mse"], f32_vb=f32["vb"])
    assert T["f32_loss"].dtype == torch.float32
    print(f"[diffusion] loss={terms['loss'].tolist()} vb={terms['vb'].tolist()} "
          f"f32-vs-f64 loss diff={max_abs(f32['loss'], terms['loss']):.2e}")

    # ---- one DDPM step (p_sample, clip_denoised=False) ----
    ddpm_x = randn((2, 4, 8, 8), g, torch.float64)
    ddpm_t = torch.tensor([731, 0], dtype=torch.int64)
    ddpm_mo = mo(2)
    ddpm_noise = randn((2, 4, 8, 8), g, torch.float64)
    with patched(gd, "_extract_into_tensor", extract_f64), fixed_randn_like(ddpm_noise):
        r = base.p_sample(FakeModel(ddpm_mo), ddpm_x, ddpm_t, clip_denoised=False)
        pmv = base.p_mean_variance(FakeModel(ddpm_mo), ddpm_x, ddpm_t, clip_denoised=False)
    mask = (ddpm_t != 0).double().view(2, 1, 1, 1)
    manual = pmv["mean"] + mask * torch.exp(0.5 * pmv["log_variance"]) * ddpm_noise
    assert r["sample"].dtype == torch.float64 and max_abs(manual, r["sample"]) == 0
    T.update(ddpm_x=ddpm_x, ddpm_t=ddpm_t, ddpm_model_output=ddpm_mo, ddpm_noise=ddpm_noise,
             ddpm_out=r["sample"], ddpm_pred_xstart=r["pred_xstart"])

    # ---- one DDIM step, eta 0 and 1 ----
    ddim_x = randn((2, 4, 8, 8), g, torch.float64)
    ddim_t = torch.tensor([600, 3], dtype=torch.int64)
    ddim_mo = mo(2)
    ddim_noise = randn((2, 4, 8, 8), g, torch.float64)
    with patched(gd, "_extract_into_tensor", extract_f64), fixed_randn_like(ddim_noise):
        r0 = base.ddim_sample(FakeModel(ddim_mo), ddim_x, ddim_t, clip_denoised=False, eta=0.0)
        r1 = base.ddim_sample(FakeModel(ddim_mo), ddim_x, ddim_t, clip_denoised=False, eta=1.0)
    assert max_abs(r0["sample"], r1["sample"]) > 1e-3
    T.update(ddim_x=ddim_x, ddim_t=ddim_t, ddim_model_output=ddim_mo, ddim_noise=ddim_noise,
             ddim_out_eta0=r0["sample"], ddim_out_eta1=r1["sample"],
             ddim_pred_xstart=r0["pred_xstart"])

    # ---- respaced "ddim25": one DDPM and one DDIM step at respaced indices ----
    idx = torch.tensor([12, 1], dtype=torch.int64)
    x25 = randn((2, 4, 8, 8), g, torch.float64)
    mo25 = mo(2)
    n25 = randn((2, 4, 8, 8), g, torch.float64)
    fms = [FakeModel(mo25) for _ in range(3)]
    with patched(gd, "_extract_into_tensor", extract_f64), fixed_randn_like(n25):
        p25 = d25.p_sample(fms[0], x25, idx, clip_denoised=False)
        q0 = d25.ddim_sample(fms[1], x25, idx, clip_denoised=False, eta=0.0)
        q1 = d25.ddim_sample(fms[2], x25, idx, clip_denoised=False, eta=1.0)
    mapped = fms[0].calls[0][1]
    assert mapped.tolist() == [d25.timestep_map[i] for i in idx.tolist()] == [480, 40]
    assert all(torch.equal(f.calls[0][1], mapped) for f in fms)
    T.update(ddim25_x=x25, ddim25_index=idx, ddim25_mapped_t=mapped, ddim25_model_output=mo25,
             ddim25_noise=n25, ddim25_ddpm_out=p25["sample"],
             ddim25_ddim_out_eta0=q0["sample"], ddim25_ddim_out_eta1=q1["sample"])

    for k, v in T.items():
        assert v.dtype in (torch.float64, torch.int64) or k.startswith("f32_"), (k, v.dtype)
    save(T, os.path.join(out, "diffusion_io.safetensors"),
         metadata={"note": "DiT GaussianDiffusion (linear, 1000 steps, LEARNED_RANGE, EPSILON, "
                           "MSE loss) run in float64 with _extract_into_tensor patched to keep "
                           "float64; f32_* = unpatched DiT code on float32 inputs; "
                           "clip_denoised=False everywhere; ddim25_* use create_diffusion('ddim25')"})


# --------------------------------------------------------------------------- #
# 5. diffusers schedulers
# --------------------------------------------------------------------------- #

def make_diffusers_schedulers(out):
    from diffusers import DDIMScheduler, DDPMScheduler

    g = gen(5)
    T = {}
    common = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001,
                  beta_end=0.02, clip_sample=False, prediction_type="epsilon")

    # ---- DDPM, learned_range ----
    ddpm = DDPMScheduler(variance_type="learned_range", **common)
    sample = randn((1, 4, 8, 8), g)
    mo = torch.cat([randn((1, 4, 8, 8), g), torch.tanh(randn((1, 4, 8, 8), g))], 1)
    ts = 500
    seed = 1234
    prev = ddpm.step(mo, ts, sample, generator=gen(seed)).prev_sample
    noise = torch.randn((1, 4, 8, 8), generator=gen(seed), dtype=torch.float32)
    # manual re-derivation (float32, as diffusers does it)
    a = ddpm.alphas_cumprod
    at, ap = a[ts], a[ts - 1]
    beta_t = 1 - at / ap
    x0 = (sample - (1 - at) ** 0.5 * mo[:, :4]) / at ** 0.5
    mean = (ap ** 0.5 * beta_t / (1 - at)) * x0 + ((at / ap) ** 0.5 * (1 - ap) / (1 - at)) * sample
    var = torch.clamp((1 - ap) / (1 - at) * beta_t, min=1e-20)
    frac = (mo[:, 4:] + 1) / 2
    logv = frac * torch.log(beta_t) + (1 - frac) * torch.log(var)
    manual = mean + torch.exp(0.5 * logv) * noise
    err = max_abs(manual, prev)
    assert err < 1e-6, err
    T.update(alphas_cumprod=a.clone(), ddpm_sample=sample, ddpm_model_output=mo,
             ddpm_timestep=torch.tensor([ts], dtype=torch.int64), ddpm_noise=noise,
             ddpm_prev_sample=prev)

    # ---- DDIM, 50 steps ("leading" spacing), eta 0 (and eta 1 with given noise) ----
    ddim = DDIMScheduler(set_alpha_to_one=False, **common)
    assert torch.equal(ddim.alphas_cumprod, a)
    ddim.set_timesteps(50)
    t10 = int(ddim.timesteps[10])
    prev_t = t10 - 1000 // 50
    s2 = randn((1, 4, 8, 8), g)
    eps = randn((1, 4, 8, 8), g)
    vnoise = randn((1, 4, 8, 8), g)
    p0 = ddim.step(eps, t10, s2, eta=0.0).prev_sample
    p1 = ddim.step(eps, t10, s2, eta=1.0, variance_noise=vnoise).prev_sample
    at, ap = a[t10], a[prev_t]
    x0 = (s2 - (1 - at) ** 0.5 * eps) / at ** 0.5
    m0 = ap ** 0.5 * x0 + (1 - ap) ** 0.5 * eps
    sd = ((1 - ap) / (1 - at) * (1 - at / ap)) ** 0.5
    m1 = ap ** 0.5 * x0 + (1 - ap - sd ** 2) ** 0.5 * eps + sd * vnoise
    assert max_abs(m0, p0) < 1e-6 and max_abs(m1, p1) < 1e-6
    T.update(ddim_timesteps=ddim.timesteps.to(torch.int64).clone(), ddim_sample=s2,
             ddim_model_output=eps, ddim_timestep=torch.tensor([t10], dtype=torch.int64),
             ddim_prev_timestep=torch.tensor([prev_t], dtype=torch.int64),
             ddim_prev_sample=p0, ddim_eta1_noise=vnoise, ddim_eta1_prev_sample=p1)
    save(T, os.path.join(out, "diffusers_schedulers.safetensors"),
         metadata={"note": "diffusers float32 schedulers: DDPMScheduler(learned_range) step at "
                           "t=500 with torch.Generator().manual_seed(1234) (noise = "
                           "ddpm_noise); DDIMScheduler(set_alpha_to_one=False, leading) 50 steps, "
                           "step at timesteps[10]"})
    print(f"[diffusers schedulers] ddpm t={ts}  ddim t={t10} -> {prev_t}")


# --------------------------------------------------------------------------- #

def manifest(out):
    total = 0
    for root, _, files in sorted(os.walk(out)):
        for f in sorted(files):
            p = os.path.join(root, f)
            size = os.path.getsize(p)
            total += size
            print(f"{os.path.relpath(p, out)}  ({size} bytes)")
            if f.endswith(".safetensors") and "weights" not in f and "diffusion_pytorch" not in f:
                for k, v in load_file(p).items():
                    print(f"    {k:28s} {str(list(v.shape)):16s} {str(v.dtype).replace('torch.', '')}")
    print(f"total {total} bytes")
    assert total < 2_000_000
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dit-repo", required=True,
                    help="folder holding DiT's models.py and diffusion/ package")
    ap.add_argument("--out", default="Tests/Fixtures")
    args = ap.parse_args()

    sys.path.insert(0, os.path.abspath(args.dit_repo))
    import models as dit_models  # noqa: E402  (original DiT)
    from diffusion import create_diffusion  # noqa: E402
    from diffusion import gaussian_diffusion as gd  # noqa: E402

    os.makedirs(args.out, exist_ok=True)
    make_original(args.out, dit_models.DiT)
    make_diffusers(args.out, dit_models.DiT, dit_models)
    base, _, d25 = make_schedule(args.out, create_diffusion)
    make_diffusion_io(args.out, base, d25, gd)
    make_diffusers_schedulers(args.out)
    manifest(args.out)
    print("all checks passed")


if __name__ == "__main__":
    main()
