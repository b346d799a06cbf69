"""GPU benchmark: the SwiGLU MLP at proxy sizes, forward+backward in bf16: the plain form (the anchor: two input
GEMMs, silu, product), ours (`archsearch.kernels.moe.mlp`: one GEMM into the packed [w1 | w3] projection and the fused
Triton SwiGLU core), the packed GEMM with the core unfused, and torch.compile of the plain MLP.

    PYTHONUNBUFFERED=1 python benchmarks/gated_mlp.py
"""

from __future__ import annotations

from unittest import mock

import torch
from _common import attempt, header, median_ms, relative, table

from archsearch.blocks.glu import mlp_hidden
from archsearch.kernels import moe as moe_module
from archsearch.kernels.moe import mlp
from archsearch.kernels.moe.reference import mlp as plain_mlp

SHAPES = [(16384, 512), (32768, 512), (16384, 1024)]  # (tokens, d_model): proxy batches of 16 x 1024 and 32 x 1024


def plain(x, w1, w2, w3):
    return plain_mlp(x, w1, w2, w3, "swiglu")


def fused(x, w1, w2, w3):
    return mlp(x, w1, w2, w3, "swiglu")  # the dispatcher: the fused core on CUDA


def packed_unfused(x, w1, w2, w3):
    with mock.patch.object(moe_module, "FUSED_SWIGLU", False):
        return mlp(x, w1, w2, w3, "swiglu")


def forward_backward(fn, x, w1, w2, w3, probe):
    leaves = [t.detach().requires_grad_() for t in (x, w1, w2, w3)]
    out = fn(*leaves)
    return (out, *torch.autograd.grad(out, leaves, probe))


def bench(tokens: int, d: int) -> list[list[object]]:
    hidden = mlp_hidden("swiglu", 8 / 3, 64, d)
    g = torch.Generator(device="cuda").manual_seed(0)
    x, probe = (torch.randn(tokens, d, device="cuda", generator=g).bfloat16() for _ in range(2))
    w1, w3 = ((torch.randn(d, hidden, device="cuda", generator=g) * d**-0.5).bfloat16() for _ in range(2))
    w2 = (torch.randn(hidden, d, device="cuda", generator=g) * hidden**-0.5).bfloat16()
    args = (x, w1, w2, w3, probe)
    ref = forward_backward(plain, *(t.float() for t in args))
    forms = {
        "anchor: plain": plain,
        "ours: packed GEMM + fused SwiGLU": fused,
        "packed GEMM, SwiGLU unfused": packed_unfused,
        "torch.compile(plain)": torch.compile(plain),
    }
    rows, anchor = [], None
    for name, fn in forms.items():
        got = attempt(lambda fn=fn: forward_backward(fn, *args), f"{name} at {tokens}x{d}")
        if got is None:
            rows.append([f"{tokens}x{d}->{hidden}", name, "failed", "", "", ""])
            continue
        errors = [relative(a, b) for a, b in zip(got, ref, strict=True)]
        both = median_ms(lambda fn=fn: forward_backward(fn, *args))
        anchor = anchor or both
        rows.append([f"{tokens}x{d}->{hidden}", name, both, f"{anchor / both:.2f}x", f"{max(errors):.1e}"])
    return rows


def main() -> None:
    print(header("SwiGLU MLP, forward+backward, bf16"))
    rows = [row for shape in SHAPES for row in bench(*shape)]
    print(table(["tokens x d -> hidden", "form", "fwd+bwd ms", "vs plain", "max err"], rows))


if __name__ == "__main__":
    main()
