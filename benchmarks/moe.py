"""GPU benchmark: mixture-of-experts dispatch, forward+backward in bf16, the sorted grouped GEMM beside a loop over
experts (the anchor: `moe_mlp_reference`), at 8 and 64 experts, 32K tokens, d_model 512, top-2 SwiGLU experts.

Errors are relative to the loop over experts in float32 on the same (bf16-rounded) inputs.

    PYTHONUNBUFFERED=1 python benchmarks/moe.py [--profile]
"""

from __future__ import annotations

import sys
from functools import partial
from unittest import mock

import torch
from _common import attempt, header, kernel_table, median_ms, relative, table

from archsearch.blocks.glu import mlp_hidden
from archsearch.kernels import moe as moe_module
from archsearch.kernels.moe import _grouped_mm_usable, activate, moe_mlp, moe_mlp_reference

TOKENS, D, TOP_K = 32768, 512, 2
HIDDEN = mlp_hidden("swiglu", 8 / 3, 64, D)


def inputs(experts: int):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(TOKENS, D, device="cuda", generator=g).bfloat16()
    logits = torch.randn(TOKENS, experts, device="cuda", generator=g)
    gates, index = logits.softmax(-1).topk(TOP_K, dim=-1)
    gates = (gates / gates.sum(-1, keepdim=True)).bfloat16()

    def weight(*shape, fan_in):
        return (torch.randn(*shape, device="cuda", generator=g) * fan_in**-0.5).bfloat16()

    w1, w3 = weight(experts, D, HIDDEN, fan_in=D), weight(experts, D, HIDDEN, fan_in=D)
    w2 = weight(experts, HIDDEN, D, fan_in=HIDDEN)
    probe = torch.randn(TOKENS, D, device="cuda", generator=g).bfloat16()
    return x, index, gates, w1, w2, w3, probe


def previous_version(x, expert_index, gates, w1, w2, w3, kind):
    """The dispatch as first delivered (2026-11-22): dropped slots cut off after a host sync, int64 sort keys,
    w1 and w3 as two grouped GEMMs, separate silu and product."""
    from archsearch.kernels.moe.combine import combine, gather

    n, k = expert_index.shape
    flat = expert_index.reshape(-1)
    order = torch.argsort(flat, stable=True)
    order = order[int((flat < 0).sum()) :]
    gmm = partial(torch._grouped_mm, offs=torch.bincount(flat[order], minlength=w1.shape[0]).cumsum(0).to(torch.int32))
    pos = torch.full((n * k,), -1, dtype=torch.int64, device=x.device)
    pos = pos.index_copy_(0, order, torch.arange(order.numel(), device=x.device)).view(n, k)
    xs = gather(x, order // k, pos)
    return combine(gmm(activate(gmm(xs, w1), gmm(xs, w3), kind), w2), pos, gates)


def with_fused_swiglu(fused: bool):
    def run(*args):
        with mock.patch.object(moe_module, "FUSED_SWIGLU", fused):
            return moe_mlp(*args)

    return run


def forward_backward(fn, x, index, gates, w1, w2, w3, probe):
    leaves = [t.detach().requires_grad_() for t in (x, gates, w1, w2, w3)]
    out = fn(leaves[0], index, leaves[1], leaves[2], leaves[3], leaves[4], "swiglu")
    return (out, *torch.autograd.grad(out, leaves, probe))


def bench(experts: int) -> list[object]:
    x, index, gates, w1, w2, w3, probe = inputs(experts)
    args = (x, index, gates, w1, w2, w3, probe)
    ref = forward_backward(moe_mlp_reference, *(t.float() if t.is_floating_point() else t for t in args))
    rows, anchor = [], None
    forms = {
        "anchor: loop over experts": moe_mlp_reference,
        "previous version (host sync, two GEMMs, plain SwiGLU)": previous_version,
        "ours, SwiGLU unfused": with_fused_swiglu(False),
        "ours: moe_mlp": with_fused_swiglu(True),
    }
    for name, fn in forms.items():
        got = attempt(lambda fn=fn: forward_backward(fn, *args), f"{name}, {experts} experts")
        if got is None:
            rows.append([experts, name, "failed", "", "", "", ""])
            continue
        errors = [relative(a, b) for a, b in zip(got, ref, strict=True)]
        with torch.no_grad():
            fwd = median_ms(lambda fn=fn: fn(x, index, gates, w1, w2, w3, "swiglu"))
        both = median_ms(lambda fn=fn: forward_backward(fn, *args))
        anchor = anchor or both
        rows.append([experts, name, fwd, both, f"{anchor / both:.2f}x", f"{errors[0]:.1e}", f"{max(errors[1:]):.1e}"])
    return rows


def profile(experts: int) -> str:
    """moe_mlp's fwd+bwd kernels by GPU time (what limits it)."""
    args = inputs(experts)
    return kernel_table(lambda: forward_backward(moe_mlp, *args))


def main() -> None:
    print(header(f"MoE dispatch: {TOKENS} tokens, d_model {D}, hidden {HIDDEN}, top-{TOP_K} SwiGLU, bf16"))
    probe = torch.zeros(8, 8, device="cuda", dtype=torch.bfloat16)
    print(f"torch._grouped_mm used: {_grouped_mm_usable(probe, probe[None])}")
    rows = [row for experts in (8, 64) for row in bench(experts)]
    print(table(["experts", "form", "fwd ms", "fwd+bwd ms", "vs anchor", "err out", "max err grads"], rows))
    if "--profile" in sys.argv:
        print(f"\nprofile of moe_mlp at 8 experts, 5 x fwd+bwd:\n{profile(8)}")


if __name__ == "__main__":
    main()
