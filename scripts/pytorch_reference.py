#!/usr/bin/env python3
"""The PyTorch reference that Kinema's `kinema bench` is compared with, on the same GPU in the same run.

Model: diffusers' DiTTransformer2DModel (random init, fp32 parameters) in the DiT-XL/2 shape (or DiT-{S,B,L}/N,
tiny). Training step, as DiT trains: q_sample on the linear 1000-step schedule with random t and labels, forward
under bf16 autocast (SDPA attention through diffusers' AttnProcessor2_0), DiT's hybrid loss (MSE on ε + IDDPM's
variational bound for the learned-range variance, in float32), backward, fused AdamW (lr 1e-4, no weight decay) and
an EMA update of an fp32 copy (decay 0.9999). Modes: eager and torch.compile(model).
Sampling: DDIM-50 (η = 0, IDDPM's "ddim50" respacing) with classifier-free guidance as DiT's forward_with_cfg does
it (guided batch = 2 × images), bf16 autocast.

diffusers' DiT is the original DiT re-laid out, with two differences that matter here: every block carries its own
copy of the timestep and label embedders (DiT-XL/2: 749.8M parameters against the original's 674.8M trainable, so
AdamW and the EMA touch 11% more parameters; the extra embedder FLOPs, ~0.04% of the forward, are not counted), and in
training each block drops labels (p = 0.1) independently. The layers, shapes and counted FLOPs are otherwise those of DiT. Kinema's
`kinema bench train --max-grad-norm 0` is the matching Kinema step (Kinema clips the gradient norm to 1 by default;
--max-grad-norm 1 here clips as it does).

FLOPs are counted as ../DESIGN.md (and KinemaModels/DiT/DiTConfig.swift `forwardFLOPs`) counts them: 2 per
multiply-add, attention 4·N²·D per layer; a training step is 3× the forward; DiT-XL/2 at 256 px is 237.2 GFLOP per
image forward. MFU is against --peak-tflops (H100 SXM dense bf16: 989).

Every result is printed as a human-readable line and as `RESULT {json}` (keys as Kinema's BenchmarkResult, plus
the PyTorch-side details).

    python3 scripts/pytorch_reference.py --model DiT-XL/2 --batch-size 64 --modes eager,compile --sample
    python3 scripts/pytorch_reference.py --device cpu --model tiny --image-size 64 --batch-size 2 --steps 3
    python3 scripts/pytorch_reference.py --self-test     # loss/DDIM against the DiT fixtures; CPU, no diffusers

The GPU machine has PyTorch but not diffusers, and no network. Download the wheels where there is one, into .whl/ of
the checkout that travels (ignored by git through .git/info/exclude; scripts/gpu-check installs them):
    grep -q '^/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl diffusers==0.42.1 importlib_metadata zipp lazy-importer
(diffusers' other requirements, huggingface_hub>=1.32, safetensors>=0.8, numpy, Pillow, requests, filelock, regex, are
on the GPU image; importlib_metadata is only imported on Python < 3.8 but is carried, with its own requirement
lazy-importer, so that what is installed is complete.) There:
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
"""

import argparse
import gc
import json
import math
import os
import re
import statistics
import sys
import time

import numpy as np
import torch

PAPER_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}  # depth, hidden, heads
LATENT_CHANNELS = 4
NUM_CLASSES = 1000
T_TRAIN = 1000


# --------------------------------------------------------------------------------------------------------------------
# model shape and counted FLOPs
# --------------------------------------------------------------------------------------------------------------------

def model_shape(name):
    """(depth, hidden, heads, patch) for "DiT-XL/2" … "DiT-S/8" or "tiny"."""
    if name == "tiny":
        return 2, 32, 2, 2
    m = re.fullmatch(r"DiT-(S|B|L|XL)/([248])", name)
    if not m:
        raise SystemExit(f"unknown model '{name}': use DiT-{{S,B,L,XL}}/{{2,4,8}} or tiny")
    depth, hidden, heads = PAPER_SIZES[m.group(1)]
    return depth, hidden, heads, int(m.group(2))


def forward_flops(depth, hidden, patch, latent, in_ch=LATENT_CHANNELS, out_ch=2 * LATENT_CHANNELS, mlp_ratio=4.0):
    """Counted forward FLOPs per sample: the same formula as DiTConfig.forwardFLOPs (Swift)."""
    n = (latent // patch) ** 2
    d, mlp = float(hidden), float(int(hidden * mlp_ratio))
    patch_in, patch_out = in_ch * patch * patch, out_ch * patch * patch
    per_block = 2 * n * d * (3 * d) + 4 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * mlp + 2 * d * 6 * d
    return (2 * n * patch_in * d + depth * per_block + 2 * n * d * patch_out + 2 * d * 2 * d
            + 2 * (256 * d + d * d))


def build_model(args, device):
    from diffusers import DiTTransformer2DModel
    depth, hidden, heads, patch = model_shape(args.model)
    torch.manual_seed(args.seed)
    config = dict(num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=LATENT_CHANNELS,
                  out_channels=2 * LATENT_CHANNELS, num_layers=depth, sample_size=args.image_size // 8,
                  patch_size=patch, num_embeds_ada_norm=NUM_CLASSES, norm_type="ada_norm_zero",
                  activation_fn="gelu-approximate")
    with torch.device(device):  # initialise where it runs: a CPU init of DiT-XL/2 takes seconds
        model = DiTTransformer2DModel(**config)
    model = model.to(device)  # a no-op where the device context already placed everything; buffers included
    assert all(p.dtype == torch.float32 and p.device.type == device.type for p in model.parameters())
    assert all(b.device.type == device.type for b in model.buffers())
    return model


def attention_processors(model):
    from diffusers.models.attention_processor import Attention
    return sorted({type(m.processor).__name__ for m in model.modules() if isinstance(m, Attention)})


# --------------------------------------------------------------------------------------------------------------------
# IDDPM's Gaussian diffusion as DiT configures it (linear betas, learned-range variance, ε prediction), our own code
# --------------------------------------------------------------------------------------------------------------------

def space_timesteps(steps, spec):
    """IDDPM's space_timesteps: "" keeps every step, "ddimN" the integer stride with exactly N steps, "a,b,…" sections."""
    if spec == "":
        return list(range(steps))
    if spec.startswith("ddim"):
        want = int(spec[4:])
        for stride in range(1, steps):
            if len(range(0, steps, stride)) == want:
                return list(range(0, steps, stride))
        raise ValueError(f"cannot create exactly {want} steps out of {steps} with an integer stride")
    counts = [int(x) for x in spec.split(",")]
    size_per, extra = divmod(steps, len(counts))
    start, kept = 0, set()
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.add(start + round(position))  # Python's round: half to even, as IDDPM
            position += stride
        start += size
    return sorted(kept)


class Diffusion:
    """Schedule arrays in float64 (numpy, as IDDPM computes them), respaced like SpacedDiffusion; DiT trains on
    create_diffusion("") = every step kept, betas recomputed from ᾱ."""

    def __init__(self, respacing="", device="cpu", steps=T_TRAIN):
        base = np.linspace(1e-4 * 1000 / steps, 0.02 * 1000 / steps, steps, dtype=np.float64)
        base_acp = np.cumprod(1.0 - base)
        self.timestep_map = space_timesteps(steps, respacing)
        last, betas = 1.0, []
        for i in self.timestep_map:
            betas.append(1 - base_acp[i] / last)
            last = base_acp[i]
        betas = np.array(betas, dtype=np.float64)
        acp = np.cumprod(1.0 - betas)
        acp_prev = np.append(1.0, acp[:-1])
        post_var = betas * (1.0 - acp_prev) / (1.0 - acp)
        arrays = dict(
            betas=betas, alphas_cumprod=acp, alphas_cumprod_prev=acp_prev,
            sqrt_alphas_cumprod=np.sqrt(acp), sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - acp),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / acp), sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / acp - 1),
            posterior_log_variance_clipped=np.log(np.append(post_var[1], post_var[1:])) if len(betas) > 1
            else np.log(betas),
            posterior_mean_coef1=betas * np.sqrt(acp_prev) / (1.0 - acp),
            posterior_mean_coef2=(1.0 - acp_prev) * np.sqrt(1.0 - betas) / (1.0 - acp),
            log_betas=np.log(betas))
        self.num_timesteps = len(betas)
        self.map_tensor = torch.tensor(self.timestep_map, dtype=torch.long, device=device)
        for k, v in arrays.items():
            setattr(self, k, torch.from_numpy(v).to(device))

    @staticmethod
    def extract(arr, t, like):
        """arr[t] broadcast over like's non-batch dims, in like's dtype (float32 in training: IDDPM's .float())."""
        return arr[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x_start, t, noise):
        return (self.extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)


def _approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def _discretized_gaussian_log_likelihood(x, mean, log_scale):
    """log P(bin of x) for a Gaussian discretised to 256 bins on [-1, 1] (edge bins open)."""
    centered, inv_std = x - mean, torch.exp(-log_scale)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def hybrid_loss(diffusion, model_output, x_start, x_t, noise, t):
    """DiT's training loss per sample: mse_i + vb_i, returned as (mean over batch, mse [B], vb [B]).

    Same terms and formulas as Kinema (KinemaDiffusion/GaussianDiffusion.trainingLoss + the backends'
    variationalBound): mse = mean (ε̂ − ε)²; vb in bits/dim sees ε̂ detached, so ε̂'s gradient comes from the MSE alone
    and the variance values' from the bound alone. Learned range: log σ² = f·log β_t + (1 − f)·log σ̃²_t, f = (v+1)/2.
    t > 0: KL(q(x_{t−1}|x_t,x_0) ‖ p) = ½(−1 + lv_p − lv_q + e^{lv_q − lv_p} + (μ_q − μ_p)² e^{−lv_p}).
    t = 0: −log p(x_0|x_1), the discretised Gaussian with log scale ½·lv_p. Kinema computes the bound in f64 per
    element; here it runs in the dtype of the inputs (float32 in training, float64 in --self-test).
    """
    channels = x_start.shape[1]
    eps, var_values = model_output[:, :channels], model_output[:, channels:]
    dims = list(range(1, x_start.dim()))
    mse = (noise - eps).pow(2).mean(dim=dims)

    ex = lambda arr: Diffusion.extract(arr, t, x_start)  # noqa: E731
    pred_xstart = ex(diffusion.sqrt_recip_alphas_cumprod) * x_t - ex(diffusion.sqrt_recipm1_alphas_cumprod) * eps.detach()
    model_mean = ex(diffusion.posterior_mean_coef1) * pred_xstart + ex(diffusion.posterior_mean_coef2) * x_t
    min_log, max_log = ex(diffusion.posterior_log_variance_clipped), ex(diffusion.log_betas)
    frac = (var_values + 1) / 2
    model_log_var = frac * max_log + (1 - frac) * min_log
    true_mean = ex(diffusion.posterior_mean_coef1) * x_start + ex(diffusion.posterior_mean_coef2) * x_t
    kl = 0.5 * (-1.0 + model_log_var - min_log + torch.exp(min_log - model_log_var)
                + (true_mean - model_mean).pow(2) * torch.exp(-model_log_var))
    nll = -_discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_var)
    vb = torch.where(t == 0, nll.mean(dim=dims), kl.mean(dim=dims)) / math.log(2.0)
    return (mse + vb).mean(), mse, vb


def cfg_combine(model_output, scale, guided_channels):
    """DiT's forward_with_cfg on the output of the doubled batch [cond; uncond]: the first `guided_channels` channels
    (DiT: 3, its "exact reproducibility" choice) become ε_u + s(ε_c − ε_u) in both halves; the rest (the 4th ε channel
    and the learned variance) pass through per sample."""
    eps, rest = model_output[:, :guided_channels], model_output[:, guided_channels:]
    cond, uncond = eps.chunk(2, dim=0)
    half = uncond + scale * (cond - uncond)
    return torch.cat([torch.cat([half, half], dim=0), rest], dim=1)


def ddim_step(diffusion, model_output, x, index):
    """IDDPM's ddim_sample with η = 0 and clip_denoised=False (index = respaced step, a [B] long tensor)."""
    channels = x.shape[1]
    eps_model = model_output[:, :channels]
    ex = lambda arr: Diffusion.extract(arr, index, x)  # noqa: E731
    pred_xstart = ex(diffusion.sqrt_recip_alphas_cumprod) * x - ex(diffusion.sqrt_recipm1_alphas_cumprod) * eps_model
    eps = (ex(diffusion.sqrt_recip_alphas_cumprod) * x - pred_xstart) / ex(diffusion.sqrt_recipm1_alphas_cumprod)
    acp_prev = ex(diffusion.alphas_cumprod_prev)
    return pred_xstart * torch.sqrt(acp_prev) + torch.sqrt(1 - acp_prev) * eps


# --------------------------------------------------------------------------------------------------------------------
# timing and reporting
# --------------------------------------------------------------------------------------------------------------------

def measure(device, body, warmup, count):
    """(warm-up wall seconds, [seconds of each timed call], [their values]): `warmup` untimed calls of body (compiles
    happen there), then `count` timed ones, queued back to back as a training loop runs them: CUDA events between
    the calls, waited for once at the end, like Kinema's bench (`measureSeconds(repeating:)`); perf_counter around
    each call on the CPU."""
    start = time.perf_counter()
    for _ in range(warmup):
        body()
    sync(device)
    warmup_seconds = time.perf_counter() - start
    values = []
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(count + 1)]
        events[0].record()
        for i in range(count):
            values.append(body())
            events[i + 1].record()
        events[-1].synchronize()
        times = [events[i].elapsed_time(events[i + 1]) / 1000.0 for i in range(count)]
    else:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            values.append(body())
            times.append(time.perf_counter() - started)
    return warmup_seconds, times, values


def time_training(device, step, args, variant):
    """The timed training steps of one mode: (warm-up seconds, step times, losses, peak memory, attention ops);
    a non-finite loss fails the mode."""
    warmup_seconds, times, losses = measure(device, step, args.warmup, args.steps)
    peak = peak_memory(device)
    losses = torch.stack(losses).float().cpu()
    if not torch.isfinite(losses).all():
        raise RuntimeError(f"train {variant}: non-finite loss {losses.tolist()}")
    ops = attention_ops(device, step) if args.profile_attention else []
    return warmup_seconds, times, losses, peak, ops


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def free_memory(device):
    torch._dynamo.reset()  # compiled code holds the previous mode's model (its parameters) alive otherwise
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device):
    return torch.cuda.max_memory_allocated() if device.type == "cuda" else None


def autocast(args, device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")


def attention_ops(device, body):
    """Names of the attention ops/kernels one call of `body` runs (which SDPA backend was chosen)."""
    try:
        from torch.profiler import ProfilerActivity, profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            body()
            sync(device)
        pattern = re.compile(r"scaled_dot_product|flash|fmha|cudnn.*(sdpa|attn|fprop|dgrad)|efficient_attention", re.I)
        return sorted({e.key[:90] for e in prof.key_averages() if pattern.search(e.key)})
    except Exception as error:  # the profiler is a diagnostic: never let it fail the benchmark
        return [f"(profiler failed: {type(error).__name__}: {error})"]


def report(args, device, env, mode, variant, batch, seconds, flops_per_image, extra):
    depth, hidden, heads, patch = model_shape(args.model)
    tokens = (args.image_size // 8 // patch) ** 2
    teraflops = flops_per_image * batch / seconds / 1e12
    result = dict(implementation="pytorch", mode=mode, variant=variant, model=args.model, imageSize=args.image_size,
                  batchSize=batch, tokensPerSample=tokens, medianStepSeconds=seconds,
                  imagesPerSecond=batch / seconds, tokensPerSecond=batch * tokens / seconds,
                  teraflopsPerSecond=teraflops, mfu=teraflops / args.peak_tflops, peakTeraflops=args.peak_tflops,
                  precision=args.precision, **env, **extra)
    return result


def emit(line, result):
    print(line, flush=True)
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)


def gib(n):
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


# --------------------------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------------------------

def prepare_model(args, device, variant, train):
    """A fresh model (the previous mode's memory freed, peak statistics reset) and what to call: the model itself
    (eager), or torch.compile of it (default mode, or mode="max-autotune-no-cudagraphs")."""
    free_memory(device)
    model = build_model(args, device).train(train)
    if variant == "eager":
        return model, model
    return model, torch.compile(model, **({} if variant == "compile" else {"mode": "max-autotune-no-cudagraphs"}))


def bench_train(args, device, env, variant):
    model, forward = prepare_model(args, device, variant, train=True)
    params = [p for p in model.parameters()]
    n_params = sum(p.numel() for p in params)
    fused = True
    try:
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0, fused=True)
    except (RuntimeError, ValueError) as error:  # fused AdamW is for CUDA (and recent CPU builds)
        print(f"  fused AdamW unavailable on {device.type} ({error}); using foreach", flush=True)
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0, foreach=True)
        fused = False
    ema = [p.detach().clone() for p in params]
    diffusion = Diffusion("", device)

    generator = torch.Generator(device=device).manual_seed(args.seed)
    latent = args.image_size // 8
    x_start = torch.randn(args.batch_size, LATENT_CHANNELS, latent, latent, device=device, generator=generator)

    def step():
        # As DiT's train.py: random t and labels per step, fresh noise, x_t by q_sample (x_start: a fixed random
        # latent batch, so no data loading is timed). Label dropout (p = 0.1) happens inside the model in train mode.
        t = torch.randint(0, diffusion.num_timesteps, (args.batch_size,), device=device)
        y = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=device)
        noise = torch.randn_like(x_start)
        x_t = diffusion.q_sample(x_start, t, noise)
        with autocast(args, device):
            out = forward(x_t, timestep=diffusion.map_tensor[t], class_labels=y, return_dict=False)[0]
        loss, _, _ = hybrid_loss(diffusion, out.float(), x_start, x_t, noise, t)
        loss.backward()
        if args.max_grad_norm > 0:  # as `kinema train` does by default; DiT's train.py does not clip
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.ema:
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1.0 - args.ema_decay)  # ema = d·ema + (1 − d)·θ
        return loss.detach()

    warmup_seconds, times, losses, peak, ops = time_training(device, step, args, variant)
    median = statistics.median(times)
    flops = 3 * forward_flops(*_flop_args(args))
    extra = dict(parameters=n_params, timedSteps=len(times), warmupSteps=args.warmup,
                 warmupSeconds=round(warmup_seconds, 2), minStepSeconds=min(times), maxStepSeconds=max(times),
                 lastLoss=float(losses[-1]), ema=args.ema, maxGradNorm=args.max_grad_norm, fusedAdamW=fused, flopsPerImage=flops,
                 peakMemoryBytes=peak, attentionOps=ops, attentionProcessors=attention_processors(model))
    result = report(args, device, env, "train", variant, args.batch_size, median, flops, extra)
    line = (f"pytorch train {args.model} {args.image_size} px batch {args.batch_size} ({variant}, {args.precision}"
            f"{', EMA' if args.ema else ''}{f', clip {args.max_grad_norm:g}' if args.max_grad_norm > 0 else ''}): step {median * 1e3:.1f} ms, {result['imagesPerSecond']:.1f} images/s, "
            f"{result['tokensPerSecond']:.0f} tokens/s, {result['teraflopsPerSecond']:.1f} TFLOP/s, "
            f"MFU {100 * result['mfu']:.1f}%, peak memory {gib(peak)}  [steps {min(times) * 1e3:.1f}–"
            f"{max(times) * 1e3:.1f} ms over {len(times)}, warm-up {warmup_seconds:.1f} s, loss {float(losses[-1]):.4f}]")
    emit(line, result)
    if ops:
        print(f"  attention ops/kernels: {', '.join(ops)}", flush=True)
    del model, forward, optimizer, ema, params
    return result


def _flop_args(args):
    depth, hidden, heads, patch = model_shape(args.model)
    return depth, hidden, patch, args.image_size // 8


# --------------------------------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------------------------------

def bench_sample(args, device, env, variant):
    model, forward = prepare_model(args, device, variant, train=False)
    diffusion = Diffusion(f"ddim{args.sample_steps}", device)
    n, latent = args.sample_batch, args.image_size // 8
    generator = torch.Generator(device=device).manual_seed(args.seed + 1)

    def sample():
        # DiT's sample.py, with DDIM: z doubled, labels [classes; null], the guided output drives both halves.
        # Everything inside inference_mode, so the compiled model sees inference tensors from the first step on
        # (a tensor made outside would make it recompile once).
        with torch.inference_mode(), autocast(args, device):
            z = torch.randn(n, LATENT_CHANNELS, latent, latent, device=device, generator=generator)
            x = torch.cat([z, z], dim=0)
            y = torch.randint(0, NUM_CLASSES, (n,), device=device, generator=generator)
            y = torch.cat([y, torch.full_like(y, NUM_CLASSES)], dim=0)
            for i in reversed(range(diffusion.num_timesteps)):
                index = torch.full((2 * n,), i, dtype=torch.long, device=device)
                out = forward(x, timestep=diffusion.map_tensor[index], class_labels=y, return_dict=False)[0]
                out = cfg_combine(out.float(), args.cfg_scale, args.guided_channels)
                x = ddim_step(diffusion, out, x, index)
        return x[:n]

    warmup_seconds, runs, outputs = measure(device, sample, args.sample_warmup, args.sample_runs)
    images = outputs[-1]
    if not torch.isfinite(images.float()).all():
        raise RuntimeError(f"sample {variant}: non-finite samples")
    peak = peak_memory(device)
    total = statistics.median(runs)
    step_seconds = total / diffusion.num_timesteps
    fwd = forward_flops(*_flop_args(args))
    # Per guided step the model runs on 2n samples for n images: 2 forwards per image per step.
    result = report(args, device, env, "sample", variant, n, step_seconds, 2 * fwd, {})
    result.update(imagesPerSecond=n / total, tokensPerSecond=None, sampleSeconds=total,
                  sampleSecondsRuns=runs, stepImagesPerSecond=n / step_seconds, modelBatch=2 * n,
                  samplingSteps=diffusion.num_timesteps, cfgScale=args.cfg_scale,
                  guidedChannels=args.guided_channels, sampleWarmupSeconds=round(warmup_seconds, 2),
                  peakMemoryBytes=peak, flopsPerImage=2 * fwd * diffusion.num_timesteps,
                  attentionProcessors=attention_processors(model))
    result["tokensPerSecond"] = n * result["tokensPerSample"] / total
    line = (f"pytorch sample {args.model} {args.image_size} px: DDIM-{diffusion.num_timesteps} CFG {args.cfg_scale:g} "
            f"batch {n} (model batch {2 * n}; {variant}, {args.precision}): {total:.3f} s for the "
            f"{diffusion.num_timesteps} steps, {n / total:.2f} images/s; guided step {step_seconds * 1e3:.1f} ms "
            f"({n / step_seconds:.1f} images/s per step, as `kinema bench sample` counts), "
            f"{result['teraflopsPerSecond']:.1f} TFLOP/s, MFU {100 * result['mfu']:.1f}%, peak memory {gib(peak)}  "
            f"[runs {', '.join(f'{r:.3f}' for r in runs)} s; warm-up {warmup_seconds:.1f} s]")
    emit(line, result)
    del model, forward
    return result


# --------------------------------------------------------------------------------------------------------------------
# self-test against the DiT fixtures (Tests/Fixtures/diffusion_io.safetensors, made from facebookresearch/DiT by
# scripts/make_golden.py; Kinema's Swift TrainingLossTests/SamplerTests check the same numbers to 1e-9)
# --------------------------------------------------------------------------------------------------------------------

def self_test(fixtures):
    from safetensors.torch import load_file
    io = load_file(os.path.join(fixtures, "diffusion_io.safetensors"))
    failures = []

    def check(name, got, want, rtol, atol=0.0):
        got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
        err = ((got - want).abs() / want.abs().clamp(min=1e-300)).max().item()
        ok = torch.allclose(got, want, rtol=rtol, atol=atol)
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: got {[round(v, 9) for v in got.flatten()[:4].tolist()]} "
              f"want {[round(v, 9) for v in want.flatten()[:4].tolist()]} (rel err {err:.1e}, rtol {rtol:g})")
        if not ok:
            failures.append(name)

    print("self-test: DiT hybrid loss and DDIM step against Tests/Fixtures/diffusion_io.safetensors")
    diffusion = Diffusion("")
    t = io["t"]  # [0, 500]: decoder NLL and KL
    loss, mse, vb = hybrid_loss(diffusion, io["model_output"], io["x_start"], io["x_t"], io["noise"], t)
    check("float64 x_t = q_sample", diffusion.q_sample(io["x_start"], t, io["noise"]), io["x_t"], 1e-12, 1e-15)
    check("float64 mse", mse, io["mse"], 1e-12)
    check("float64 vb (t=0 NLL, t=500 KL)", vb, io["vb"], 1e-9)
    check("float64 loss mean", loss, io["loss"].mean(), 1e-9)

    f32 = {k: io[k].float() for k in ("model_output", "x_start", "noise")}
    x_t32 = diffusion.q_sample(f32["x_start"], t, f32["noise"])
    check("float32 x_t", x_t32, io["f32_x_t"], 1e-6, 1e-6)
    _, mse32, vb32 = hybrid_loss(diffusion, f32["model_output"], f32["x_start"], x_t32, f32["noise"], t)
    check("float32 mse vs DiT's float32", mse32, io["f32_mse"], 1e-6)
    check("float32 vb[t=500] vs DiT's float32", vb32[1:], io["f32_vb"][1:], 1e-5)
    check("float32 vb[t=0] vs DiT's float32 (ill-conditioned cdf difference)", vb32[:1], io["f32_vb"][:1], 1e-2)

    # ε̂'s gradient comes from the MSE alone (the bound sees it detached); v's from the bound alone.
    out = io["model_output"].clone().requires_grad_(True)
    loss, _, _ = hybrid_loss(diffusion, out, io["x_start"], io["x_t"], io["noise"], t)
    loss.backward()
    c, b, per = io["x_start"].shape[1], io["x_start"].shape[0], io["x_start"][0].numel()
    check("d loss / d ε̂ = 2(ε̂ − ε)/(B·numel)", out.grad[:, :c], 2 * (io["model_output"][:, :c] - io["noise"]) / (b * per),
          1e-12, 1e-18)

    # A perfect ε with v = 0 (the variance halfway between its bounds): MSE 0, the bound finite and positive.
    for t_value in (0, 1, 500, 999):
        tt = torch.full((2,), t_value, dtype=torch.long)
        x_t = diffusion.q_sample(io["x_start"], tt, io["noise"])
        perfect = torch.cat([io["noise"], torch.zeros_like(io["noise"])], dim=1)
        for dtype in (torch.float64, torch.float32):
            loss, mse, vb = hybrid_loss(diffusion, perfect.to(dtype), io["x_start"].to(dtype), x_t.to(dtype),
                                        io["noise"].to(dtype), tt)
            ok = bool(torch.isfinite(loss) and loss > 0 and mse.abs().max() < 1e-6 and (vb > 0).all())
            print(f"  {'ok  ' if ok else 'FAIL'} perfect ε, v = 0, t = {t_value}, {str(dtype)[6:]}: "
                  f"loss {loss.item():.6g}, mse {mse.abs().max().item():.1e}, vb {vb.tolist()}")
            if not ok:
                failures.append(f"perfect eps t={t_value} {dtype}")

    # Respacing and one DDIM (η = 0) step of create_diffusion("ddim25").
    ddim25 = Diffusion("ddim25")
    check("ddim25 timestep map at [12, 1]", ddim25.map_tensor[io["ddim25_index"]], io["ddim25_mapped_t"], 0)
    check("ddim25 DDIM η=0 step", ddim_step(ddim25, io["ddim25_model_output"], io["ddim25_x"], io["ddim25_index"]),
          io["ddim25_ddim_out_eta0"], 1e-9, 1e-12)
    check("ddim50 keeps range(0, 1000, 20)", Diffusion("ddim50").map_tensor, torch.arange(0, 1000, 20), 0)
    check("unspaced DDIM η=0 step at t = [600, 3]",
          ddim_step(diffusion, io["ddim_model_output"], io["ddim_x"], io["ddim_t"]), io["ddim_out_eta0"], 1e-9, 1e-12)

    # CFG combination: guided channels of the conditional half, the rest per sample.
    out = torch.randn(4, 8, 2, 2, dtype=torch.float64)
    got = cfg_combine(out, 4.0, 3)
    want_eps = out[2:, :3] + 4.0 * (out[:2, :3] - out[2:, :3])
    check("cfg guided channels (both halves)", got[:, :3], torch.cat([want_eps, want_eps]), 1e-15)
    check("cfg channels 3..7 unchanged", got[:, 3:], out[:, 3:], 0)

    # Counted FLOPs: DESIGN.md's 237.2 GFLOP per DiT-XL/2 image at 256 px.
    xl = forward_flops(28, 1152, 2, 32)
    check("DiT-XL/2 forward GFLOP", xl / 1e9, 237.2, 1e-3)
    print("self-test: " + ("all passed" if not failures else f"{len(failures)} FAILED: {', '.join(failures)}"))
    return not failures


# --------------------------------------------------------------------------------------------------------------------

def environment(args, device):
    env = dict(torch=torch.__version__, device=device.type)
    try:
        import diffusers
        env["diffusers"] = diffusers.__version__
        env["diffusersPath"] = os.path.dirname(diffusers.__file__)
    except ImportError as error:
        raise SystemExit(f"diffusers is not importable ({error}). On the GPU machine install the carried wheels: "
                         "python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && "
                         "export PYTHONPATH=/tmp/site")
    env.update(flashSdp=torch.backends.cuda.flash_sdp_enabled(),
               memEfficientSdp=torch.backends.cuda.mem_efficient_sdp_enabled(),
               cudnnSdp=torch.backends.cuda.cudnn_sdp_enabled(), mathSdp=torch.backends.cuda.math_sdp_enabled())
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_properties(device).name, cuda=torch.version.cuda)
    else:
        env.update(gpu=None, cpuThreads=torch.get_num_threads())
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="DiT-XL/2", help="DiT-{S,B,L,XL}/{2,4,8} or tiny (default DiT-XL/2)")
    parser.add_argument("--image-size", type=int, default=256, help="pixels; latents are 8x smaller (default 256)")
    parser.add_argument("--batch-size", type=int, default=64, help="training images per step (default 64)")
    parser.add_argument("--modes", default="eager,compile",
                        help="training modes, comma-separated: eager, compile (torch.compile default mode), "
                             "max-autotune (mode=max-autotune-no-cudagraphs); empty for none")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per mode (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps per mode (default 3)")
    parser.add_argument("--sample", action="store_true", help="also benchmark DDIM sampling with CFG")
    parser.add_argument("--sample-modes", default="eager", help="sampling modes (as --modes; default eager)")
    parser.add_argument("--sample-batch", type=int, default=8, help="images per sampling run (model batch 2x)")
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps (respacing ddimN; default 50)")
    parser.add_argument("--sample-runs", type=int, default=3, help="timed sampling runs (median; default 3)")
    parser.add_argument("--sample-warmup", type=int, default=1, help="untimed sampling runs (default 1)")
    parser.add_argument("--cfg-scale", type=float, default=4.0)
    parser.add_argument("--guided-channels", type=int, default=3,
                        help="channels CFG guides (DiT's forward_with_cfg: 3; all ε channels: 4)")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="bf16 autocast or plain fp32")
    parser.add_argument("--no-ema", dest="ema", action="store_false", help="leave out the EMA update")
    parser.add_argument("--ema-decay", type=float, default=0.9999)
    parser.add_argument("--max-grad-norm", type=float, default=0,
                        help="clip the global gradient norm to this (0, the default: no clipping, as DiT trains)")
    parser.add_argument("--no-profile-attention", dest="profile_attention", action="store_false",
                        help="skip the one profiled step that names the attention kernels")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="for MFU (H100 SXM dense bf16: 989)")
    parser.add_argument("--time-budget", type=float, default=0,
                        help="seconds; a mode that would start after this much time is skipped (0: no limit)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--self-test", action="store_true",
                        help="check the loss, DDIM step, CFG and FLOP count against Tests/Fixtures and exit")
    parser.add_argument("--fixtures", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                           "Tests", "Fixtures"))
    args = parser.parse_args()

    if args.self_test:
        sys.exit(0 if self_test(args.fixtures) else 1)

    model_shape(args.model)
    if args.image_size % 8 or (args.image_size // 8) % model_shape(args.model)[3]:
        raise SystemExit(f"--image-size {args.image_size}: latents (size/8) must be a multiple of the patch size")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch.cuda.is_available() is False")
    env = environment(args, device)
    started = time.perf_counter()
    depth, hidden, heads, patch = model_shape(args.model)
    tokens = (args.image_size // 8 // patch) ** 2
    print(f"pytorch reference: torch {env['torch']}, diffusers {env['diffusers']} ({env['diffusersPath']}), "
          f"{env.get('gpu') or 'CPU'} (CUDA {env.get('cuda')}); {args.model} = depth {depth}, hidden {hidden}, "
          f"{heads} heads x {hidden // heads}, patch {patch}, {tokens} tokens; counted forward "
          f"{forward_flops(depth, hidden, patch, args.image_size // 8) / 1e9:.4g} GFLOP/image; "
          f"float32 matmul precision {torch.get_float32_matmul_precision()}", flush=True)
    # The CUDA SDPA switches (the CPU has its own flash kernel); each training mode's profiled step names what ran.
    print(f"torch.backends.cuda SDPA enabled: flash_sdp_enabled() {env['flashSdp']}, mem-efficient "
          f"{env['memEfficientSdp']}, cuDNN {env['cudnnSdp']}, math {env['mathSdp']}", flush=True)

    def modes(spec):
        known = {"eager": "eager", "compile": "compile", "max-autotune": "compile:max-autotune-no-cudagraphs"}
        out = []
        for m in filter(None, (s.strip() for s in spec.split(","))):
            if m not in known:
                raise SystemExit(f"unknown mode '{m}': use eager, compile or max-autotune")
            out.append(known[m])
        return out

    # Eager runs first, compiled ones after (they take the long warm-ups), so --time-budget drops compiles first.
    jobs = [("train", v) for v in modes(args.modes)] + ([("sample", v) for v in modes(args.sample_modes)]
                                                        if args.sample else [])
    jobs.sort(key=lambda job: job[1] != "eager")
    failed = False
    for i, (kind, variant) in enumerate(jobs):
        elapsed = time.perf_counter() - started
        if args.time_budget and i > 0 and elapsed > args.time_budget:
            print(f"pytorch {kind} {variant}: skipped, {elapsed:.0f} s elapsed > --time-budget {args.time_budget:g} s",
                  flush=True)
            continue
        try:
            (bench_train if kind == "train" else bench_sample)(args, device, env, variant)
        except Exception as error:  # one mode failing (e.g. a compile error) must not hide the others
            failed = True
            print(f"pytorch {kind} {variant}: FAILED: {type(error).__name__}: {str(error)[:2000]}", flush=True)
            import traceback
            traceback.print_exc()
            free_memory(device)
    print(f"pytorch reference: done in {time.perf_counter() - started:.1f} s", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
