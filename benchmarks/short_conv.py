"""GPU benchmark: the short causal depthwise convolution (ShortConv), forward+backward in bf16: our Triton kernel
beside the F.conv1d form it replaces (the anchor; cuDNN's depthwise convolution), ours with the backward grid it had
before the tile split (eight tiles a program at every shape), and causal-conv1d when installed.

    PYTHONUNBUFFERED=1 python benchmarks/short_conv.py
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch
from _common import attempt, gpu_ms, header, median_ms, relative, table

from archsearch.kernels.short_conv import causal_conv1d_fn, fused, short_conv_reference
from archsearch.kernels.short_conv.fused import TILES_PER_PROGRAM, short_conv_triton

# (B, T, C, K): Hyena and DeltaNet sizes at T 1024 and 2048, then the study proxy's 16 x 256 at d_model 256 (one
# projection, Hyena's three) and 512, where the backward grid is small enough for the split to matter
SHAPES = [(16, 1024, 1536, 3), (8, 2048, 3072, 4), (16, 1024, 1024, 4), (16, 256, 256, 4), (16, 256, 768, 3), (16, 256, 512, 4)]


def eight_tiles_always():
    """The backward's grid as it was before the split (TILES_PER_PROGRAM tiles a program at every shape), for a row."""
    return mock.patch.object(fused, "tiles_per_program", lambda t, c, b, multiprocessors: TILES_PER_PROGRAM)


def forward_backward(fn, x, w, probe):
    leaves = [x.detach().requires_grad_(), w.detach().requires_grad_()]
    out = fn(*leaves)
    return (out, *torch.autograd.grad(out, leaves, probe))


def bench(b, t, c, k) -> list[list[object]]:
    g = torch.Generator(device="cuda").manual_seed(0)
    x, probe = (torch.randn(b, t, c, device="cuda", generator=g).bfloat16() for _ in range(2))
    w = torch.randn(c, k, device="cuda", generator=g) * k**-0.5
    ref = forward_backward(short_conv_reference, x.double(), w.double(), probe.double())
    forms = {"anchor: F.conv1d": (short_conv_reference, contextlib.nullcontext), "ours: Triton": (short_conv_triton, contextlib.nullcontext),
             f"ours, {TILES_PER_PROGRAM} tiles always": (short_conv_triton, eight_tiles_always)}
    if causal_conv1d_fn is not None and k <= 4:
        forms["causal-conv1d"] = (lambda x, w: causal_conv1d_fn(x.transpose(1, 2), w.to(x.dtype)).transpose(1, 2), contextlib.nullcontext)
    rows, anchor = [], None
    for name, (fn, grid) in forms.items():
        shape = f"B{b} T{t} C{c} K{k}"
        with grid():
            got = attempt(lambda fn=fn: forward_backward(fn, x, w, probe), f"{name} at {shape}")
            if got is None:
                rows.append([shape, name, "failed", "", "", "", ""])
                continue
            errors = [relative(a, r) for a, r in zip(got, ref, strict=True)]
            with torch.no_grad():
                fwd = median_ms(lambda fn=fn: fn(x, w))
            both = median_ms(lambda fn=fn: forward_backward(fn, x, w, probe))
            kernels = gpu_ms(lambda fn=fn: forward_backward(fn, x, w, probe))  # at 16 x 256 the wall time is the host's launches
        anchor = anchor or kernels
        rows.append([shape, name, fwd, both, kernels, f"{anchor / kernels:.2f}x", f"{max(errors):.1e}"])
    return rows


def main() -> None:
    print(header("Short causal depthwise convolution, bf16 activations, fp32 weights"))
    rows = [row for shape in SHAPES for row in bench(*shape)]
    print(table(["shape", "form", "fwd ms", "fwd+bwd ms", "fwd+bwd GPU ms", "vs anchor (GPU)", "max err"], rows))


if __name__ == "__main__":
    main()
