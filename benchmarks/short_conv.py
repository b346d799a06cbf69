"""GPU benchmark: the short causal depthwise convolution (ShortConv), forward+backward in bf16: our Triton kernel
beside the F.conv1d form it replaces (the anchor; cuDNN's depthwise convolution) and causal-conv1d when installed.

    PYTHONUNBUFFERED=1 python benchmarks/short_conv.py
"""

from __future__ import annotations

import torch
from _common import attempt, header, median_ms, relative, table

from archsearch.kernels.short_conv import causal_conv1d_fn, short_conv_reference
from archsearch.kernels.short_conv.fused import short_conv_triton

SHAPES = [(16, 1024, 1536, 3), (8, 2048, 3072, 4), (16, 1024, 1024, 4)]  # (B, T, C, K): Hyena and DeltaNet sizes


def forward_backward(fn, x, w, probe):
    leaves = [x.detach().requires_grad_(), w.detach().requires_grad_()]
    out = fn(*leaves)
    return (out, *torch.autograd.grad(out, leaves, probe))


def bench(b, t, c, k) -> list[list[object]]:
    g = torch.Generator(device="cuda").manual_seed(0)
    x, probe = (torch.randn(b, t, c, device="cuda", generator=g).bfloat16() for _ in range(2))
    w = torch.randn(c, k, device="cuda", generator=g) * k**-0.5
    ref = forward_backward(short_conv_reference, x.double(), w.double(), probe.double())
    forms = {"anchor: F.conv1d": short_conv_reference, "ours: Triton": short_conv_triton}
    if causal_conv1d_fn is not None and k <= 4:
        forms["causal-conv1d"] = lambda x, w: causal_conv1d_fn(x.transpose(1, 2), w.to(x.dtype)).transpose(1, 2)
    rows, anchor = [], None
    for name, fn in forms.items():
        got = attempt(lambda fn=fn: forward_backward(fn, x, w, probe), f"{name} at {b, t, c, k}")
        if got is None:
            rows.append([f"B{b} T{t} C{c} K{k}", name, "failed", "", "", ""])
            continue
        errors = [relative(a, r) for a, r in zip(got, ref, strict=True)]
        with torch.no_grad():
            fwd = median_ms(lambda fn=fn: fn(x, w))
        both = median_ms(lambda fn=fn: forward_backward(fn, x, w, probe))
        anchor = anchor or both
        rows.append([f"B{b} T{t} C{c} K{k}", name, fwd, both, f"{anchor / both:.2f}x", f"{max(errors):.1e}"])
    return rows


def main() -> None:
    print(header("Short causal depthwise convolution, bf16 activations, fp32 weights"))
    rows = [row for shape in SHAPES for row in bench(*shape)]
    print(table(["shape", "form", "fwd ms", "fwd+bwd ms", "vs anchor", "max err"], rows))


if __name__ == "__main__":
    main()
