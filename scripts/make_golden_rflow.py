#!/usr/bin/env python3
"""Golden fixture for Kinema's rectified flow (Tests/Fixtures/rectified_flow.safetensors), made by Open-Sora 1.2's own
scheduler code (opensora/schedulers/rf, commit d7a4d6e of hpcaitech/Open-Sora), imported from a local checkout and
never committed here.

    pip install torch einops tqdm safetensors
    git clone https://github.com/hpcaitech/Open-Sora /tmp/Open-Sora && git -C /tmp/Open-Sora checkout d7a4d6e
    python3 scripts/make_golden_rflow.py --opensora-repo /tmp/Open-Sora --out Tests/Fixtures

Only the scheduler files are loaded (rf/, iddpm/gaussian_diffusion.py and iddpm/diffusion_utils.py), into a scratch
package with a stand-in for opensora.registry, so none of Open-Sora's model dependencies are needed. The script is
deterministic (seeded torch.Generator) and prints what it wrote.
"""

import argparse
import os
import shutil
import sys
import tempfile
import types

import torch
from safetensors.torch import save_file


def load_scheduler_package(repo):
    scratch = tempfile.mkdtemp()
    root = os.path.join(scratch, "opensora")
    for sub in ("schedulers/rf", "schedulers/iddpm"):
        os.makedirs(os.path.join(root, sub))
    for path in ("schedulers/rf/rectified_flow.py", "schedulers/rf/__init__.py",
                 "schedulers/iddpm/gaussian_diffusion.py", "schedulers/iddpm/diffusion_utils.py"):
        shutil.copy(os.path.join(repo, "opensora", path), os.path.join(root, path))
    for package in ("", "schedulers", "schedulers/iddpm"):
        open(os.path.join(root, package, "__init__.py"), "w").close()
    registry = types.ModuleType("opensora.registry")
    registry.SCHEDULERS = types.SimpleNamespace(register_module=lambda name: (lambda cls: cls))
    sys.modules["opensora.registry"] = registry
    sys.path.insert(0, scratch)
    import opensora.schedulers.rf as rf
    return rf


class TextEncoder:
    """Stand-in text encoder: the caption "embedding" is 1 for a prompt and 0 for the null caption."""

    def encode(self, prompts):
        return {"y": torch.ones(len(prompts), 1)}

    def null(self, n):
        return torch.zeros(n, 1)


def velocity_model(x, t, y, **kwargs):
    """A toy model with a learned-sigma shaped output: v = 0.3 · x · (1 + y) − 0.1 · t / 1000, then a zero half."""
    v = 0.3 * x * (1 + y.view(-1, 1, 1, 1, 1)) - 0.1 * (t / 1000).view(-1, 1, 1, 1, 1)
    return torch.cat([v, torch.zeros_like(v)], dim=1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--opensora-repo", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rf = load_scheduler_package(args.opensora_repo)
    g = torch.Generator().manual_seed(7)
    out = {}

    # timestep_transform for three sizes (height, width, video frames), five timesteps each.
    sizes = [(256, 256, 1), (512, 512, 1), (720, 1280, 51)]
    t = torch.tensor([0.0, 100.0, 500.0, 900.0, 1000.0])
    transformed = []
    for h, w, f in sizes:
        kwargs = {"height": torch.full((5,), float(h)), "width": torch.full((5,), float(w)),
                  "num_frames": torch.full((5,), float(f))}
        transformed.append(rf.timestep_transform(t.clone(), kwargs, num_timesteps=1000))
    out["transform_t"] = t
    out["transform_sizes"] = torch.tensor([[h, w, 1 if f == 1 else f // 17 * 5] for h, w, f in sizes],
                                          dtype=torch.float32)
    out["transform_out"] = torch.stack(transformed)

    # add_noise and the masked training loss, with a fixed model output; the gradient by autograd.
    scheduler = rf.RFlowScheduler(num_timesteps=1000)
    x0 = torch.randn(2, 3, 4, 2, 2, generator=g)
    noise = torch.randn(2, 3, 4, 2, 2, generator=g)
    output = torch.randn(2, 6, 4, 2, 2, generator=g).requires_grad_(True)
    timesteps = torch.tensor([250.0, 800.0])
    mask = torch.tensor([[True, True, False, True], [False, True, True, True]])
    seen = {}

    def model(x_t, t):
        seen["x_t"] = x_t
        return output

    terms = scheduler.training_losses(model, x0, {}, noise=noise, mask=mask, t=timesteps)
    terms["loss"].mean().backward()
    out.update(x0=x0, noise=noise, output=output.detach(), timesteps=timesteps, mask=mask.float(),
               x_t_masked=seen["x_t"], x_t=scheduler.add_noise(x0, noise, timesteps), loss=terms["loss"].detach(),
               gradient=output.grad)

    # The Euler sampler with guidance 4, the timestep shift for 256 × 256 × 51 frames, and frame 0 conditioning.
    sampler = rf.RFLOW(num_sampling_steps=6, cfg_scale=4.0, use_timestep_transform=True)
    clean = torch.randn(2, 4, 3, 4, 4, generator=g)
    start = torch.randn(2, 4, 3, 4, 4, generator=g)
    frame_mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    z = torch.where(frame_mask.bool()[:, None, :, None, None], start, clean)
    extra = {"height": torch.full((2,), 256.0), "width": torch.full((2,), 256.0), "num_frames": torch.full((2,), 51.0)}
    sampled = sampler.sample(velocity_model, TextEncoder(), z, ["a", "b"], "cpu", additional_args=extra,
                             mask=frame_mask, progress=False)
    plain = sampler.sample(velocity_model, TextEncoder(), start.clone(), ["a", "b"], "cpu", additional_args=extra,
                           progress=False)
    out.update(sample_clean=clean, sample_start=start, sample_frame_mask=frame_mask, sample_conditioned=sampled,
               sample_plain=plain)

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "rectified_flow.safetensors")
    save_file({k: v.detach().float().contiguous() for k, v in out.items()}, path)
    for key, value in out.items():
        print(f"{key}: {list(value.shape)}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
