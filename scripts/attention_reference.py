#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention (bf16) timed on the shapes that kinema-gpu-check times, printed in the same
format, so the two can be compared line by line: its cuDNN backend (NVIDIA's wgmma flash kernels on Hopper, what SDPA
picks on an H100) and its FlashAttention-2 backend."""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [(64, 16, 256, 72), (64, 16, 256, 64), (64, 8, 256, 128), (8, 16, 1024, 72)]


def milliseconds(body, iterations=20):
    for _ in range(3):
        body()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        body()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iterations


def main():
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
    for batch, heads, tokens, head_dim in SHAPES:
        q, k, v, grad = (torch.randn(batch, heads, tokens, head_dim, device="cuda", dtype=torch.bfloat16)
                         for _ in range(4))
        for t in (q, k, v):
            t.requires_grad_(True)
        for label, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            with sdpa_kernel(backend):
                forward = milliseconds(lambda: F.scaled_dot_product_attention(q, k, v))
                both = milliseconds(lambda: F.scaled_dot_product_attention(q, k, v).backward(grad))
            flops = 4 * batch * heads * tokens * tokens * head_dim
            print(f"TIME torch sdpa {label} B={batch} H={heads} N={tokens} Dh={head_dim}: forward {forward:.3f} ms "
                  f"({flops / forward / 1e9:.1f} TFLOP/s), forward+backward {both:.3f} ms "
                  f"({3.5 * flops / both / 1e9:.1f} TFLOP/s)")


if __name__ == "__main__":
    main()
