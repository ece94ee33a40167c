#!/usr/bin/env python3
"""The PyTorch reference for `kinema bench train --model Latte-XL/2`, on the same GPU in the same run.

Model: diffusers' LatteTransformer3DModel (random init, fp32 parameters) in Latte-XL/2's shape: hidden 1152 = 16
heads × 72, 28 spatial blocks each followed by a temporal block, patch 2, adaLN-single, cross-attention to projected
T5-XXL-sized caption states (4096 wide), learned-sigma output (8 channels).
Training step, as Open-Sora 1.2 trains with rectified flow (and as Kinema's Benchmark.trainLatte does): latents
[B, 4, F, h, w] and caption states [B, L, 4096] fixed random tensors (no data loading timed); per step logit-normal
timesteps shifted for the resolution and length, x_t = (1 − t/T)·x0 + (t/T)·ε, forward under bf16 autocast (SDPA
through diffusers' AttnProcessor2_0), MSE of the first 4 output channels against v = x0 − ε in float32, backward,
gradient-norm clipping at 1, fused AdamW (lr 1e-4, no weight decay) and an EMA of an fp32 copy (decay 0.9999).
Modes: eager and torch.compile(model).

One difference: diffusers' Latte repeats the caption states per frame but not their attention mask (a mask of batch B
meets keys of batch B·F and fails), so PyTorch attends to all L caption tokens while Kinema masks the last quarter as
padding. The counted FLOPs are the same (Kinema's flash attention computes masked keys too and drops them).

FLOPs are counted as ../DESIGN.md and PixArtConfig.forwardFLOPs (Swift) count them; a training step is 3× the forward.

    python3 scripts/pytorch_latte_reference.py --modes eager,compile
    python3 scripts/pytorch_latte_reference.py --device cpu --model tiny --frames 2 --image-size 32 --steps 2

Needs diffusers: see the header of scripts/pytorch_reference.py for the wheels the GPU machine gets.
"""

import argparse
import math
import statistics
import sys
import time

import torch

from pytorch_reference import attention_processors, emit, free_memory, gib, time_training

SIZES = {"Latte-S/2": (12, 384, 6), "Latte-B/2": (12, 768, 12), "Latte-L/2": (24, 1024, 16),
         "Latte-XL/2": (28, 1152, 16), "tiny": (2, 64, 2)}  # depth, hidden, heads
PATCH, IN_CHANNELS, OUT_CHANNELS, T_TRAIN = 2, 4, 8, 1000


def forward_flops(depth, hidden, frames, grid, caption_length, caption_channels):
    """Counted forward FLOPs per video: the same formula as PixArtConfig.forwardFLOPs (Swift), temporal blocks on."""
    d, n, f, length = float(hidden), float(grid * grid), float(frames), float(caption_length)
    tokens, mlp = f * n, 4 * d
    patch_embed = 2 * tokens * IN_CHANNELS * PATCH * PATCH * d
    captions = 2 * length * (caption_channels * d + d * d)
    ada_ln = 2 * (256 * d + d * d + d * 6 * d)
    feed_forward = 2 * tokens * 2 * d * mlp
    self_attention = 2 * tokens * 4 * d * d + 4 * f * n * n * d
    cross_attention = 2 * tokens * 2 * d * d + 2 * length * 2 * d * d + 4 * f * n * length * d
    temporal = 2 * tokens * 4 * d * d + 4 * n * f * f * d + feed_forward
    final = 2 * tokens * d * PATCH * PATCH * OUT_CHANNELS
    return patch_embed + captions + ada_ln + final + depth * (self_attention + cross_attention + feed_forward + temporal)


def build_model(args, device):
    from diffusers import LatteTransformer3DModel
    depth, hidden, heads = SIZES[args.model]
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = LatteTransformer3DModel(
            num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=IN_CHANNELS,
            out_channels=OUT_CHANNELS, num_layers=depth, cross_attention_dim=hidden, attention_bias=True,
            sample_size=args.image_size // 8, patch_size=PATCH, activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
            caption_channels=args.caption_channels, video_length=args.frames)
    return model.to(device)


def timesteps(batch, frames, image_size, device, generator):
    """Open-Sora 1.2's rectified-flow training timesteps, as RectifiedFlow.swift draws them: logit-normal t ∈ (0, 1),
    then the resolution and length shift t ↦ r·t / (1 + (r − 1)·t), r = √(H·W / 512²)·√frames, scaled to [0, T]."""
    t = torch.sigmoid(torch.randn(batch, device=device, generator=generator))
    ratio = math.sqrt(image_size * image_size / 512 ** 2) * math.sqrt(frames)
    t = ratio * t / (1 + (ratio - 1) * t)
    return t * T_TRAIN


def bench_train(args, device, env, variant):
    free_memory(device)
    model = build_model(args, device).train()
    forward = model if variant == "eager" else torch.compile(model)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0, fused=device.type == "cuda")
    ema = [p.detach().clone() for p in params]
    generator = torch.Generator(device=device).manual_seed(args.seed)
    latent = args.image_size // 8
    x0 = torch.randn(args.batch_size, IN_CHANNELS, args.frames, latent, latent, device=device, generator=generator)
    captions = torch.randn(args.batch_size, args.caption_length, args.caption_channels, device=device,
                           generator=generator)

    def step():
        t = timesteps(args.batch_size, args.frames, args.image_size, device, generator)
        noise = torch.randn_like(x0)
        w = (t / T_TRAIN).view(-1, 1, 1, 1, 1)
        x_t = (1 - w) * x0 + w * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            out = forward(x_t, timestep=t, encoder_hidden_states=captions, return_dict=False)[0]
        loss = (out[:, :IN_CHANNELS].float() - (x0 - noise)).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1.0 - 0.9999)
        return loss.detach()

    warmup_seconds, times, losses, peak, ops = time_training(device, step, args, variant)
    depth, hidden, heads = SIZES[args.model]
    grid = latent // PATCH
    tokens = args.frames * grid * grid
    flops = 3 * forward_flops(depth, hidden, args.frames, grid, args.caption_length, args.caption_channels)
    median = statistics.median(times)
    teraflops = flops * args.batch_size / median / 1e12
    result = dict(implementation="pytorch", mode="train", variant=variant, model=args.model,
                  imageSize=args.image_size, frames=args.frames, captionLength=args.caption_length,
                  batchSize=args.batch_size, tokensPerSample=tokens, medianStepSeconds=median,
                  videosPerSecond=args.batch_size / median, tokensPerSecond=args.batch_size * tokens / median,
                  teraflopsPerSecond=teraflops, mfu=teraflops / args.peak_tflops, peakMemoryBytes=peak,
                  parameters=sum(p.numel() for p in params), timedSteps=len(times), warmupSteps=args.warmup,
                  warmupSeconds=round(warmup_seconds, 2), lastLoss=float(losses[-1]), flopsPerVideo=flops,
                  attentionOps=ops, attentionProcessors=attention_processors(model), precision=args.precision, **env)
    line = (f"pytorch train {args.model} {args.frames}x{args.image_size}px batch {args.batch_size} ({variant}, "
            f"{args.precision}, rectified flow, clip, {'fused ' if device.type == 'cuda' else ''}AdamW, EMA): step {median * 1e3:.1f} ms, "
            f"{result['videosPerSecond']:.2f} videos/s, {result['tokensPerSecond']:.0f} tokens/s, {teraflops:.1f} "
            f"TFLOP/s, MFU {100 * result['mfu']:.1f}%, peak memory {gib(peak)}  [steps {min(times) * 1e3:.1f}–"
            f"{max(times) * 1e3:.1f} ms over {len(times)}, warm-up {warmup_seconds:.1f} s, loss {float(losses[-1]):.4f}]")
    emit(line, result)
    if ops:
        print(f"  attention ops/kernels: {', '.join(ops)}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="Latte-XL/2", choices=sorted(SIZES))
    parser.add_argument("--image-size", type=int, default=256, help="pixels; latents are 8x smaller")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--caption-length", type=int, default=120)
    parser.add_argument("--caption-channels", type=int, default=4096)
    parser.add_argument("--modes", default="eager,compile", help="comma-separated: eager, compile")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--no-profile-attention", dest="profile_attention", action="store_false")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    import diffusers
    env = dict(torch=torch.__version__, diffusers=diffusers.__version__,
               gpu=torch.cuda.get_device_properties(device).name if device.type == "cuda" else None)
    depth, hidden, heads = SIZES[args.model]
    grid = args.image_size // 8 // PATCH
    print(f"pytorch Latte reference: torch {env['torch']}, diffusers {env['diffusers']}, {env['gpu'] or 'CPU'}; "
          f"{args.model} = depth {depth} (+{depth} temporal), hidden {hidden}, {heads} heads x {hidden // heads}, "
          f"{args.frames} frames x {grid}x{grid} patches = {args.frames * grid * grid} tokens, captions "
          f"{args.caption_length}x{args.caption_channels}; counted forward "
          f"{forward_flops(depth, hidden, args.frames, grid, args.caption_length, args.caption_channels) / 1e9:.1f} "
          f"GFLOP/video", flush=True)
    failed = False
    for variant in filter(None, (m.strip() for m in args.modes.split(","))):
        if variant not in ("eager", "compile"):
            raise SystemExit(f"unknown mode '{variant}': use eager or compile")
        try:
            bench_train(args, device, env, variant)
        except Exception as error:  # one mode failing must not hide the others
            failed = True
            print(f"pytorch train {variant}: FAILED: {type(error).__name__}: {str(error)[:2000]}", flush=True)
            free_memory(device)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
