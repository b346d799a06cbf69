"""Mixture-of-experts dispatch: the public form blocks call, tokens sorted by expert and run as grouped matmuls.

`moe_mlp(x, expert_index, gates, w1, w2, w3, kind)` is the whole routed-expert computation after the router has
decided: x [N, d] tokens; expert_index [N, k] integer (the k experts of each token, -1 for a slot dropped by
capacity); gates [N, k] the weights of those slots; stacked expert weights w1, w3 [E, d, hidden], w2 [E, hidden, d]
(w3 None for the plain MLP); kind one of "swiglu", "geglu", "reglu", "mlp". It returns
y [N, d] = sum_j gates[n, j] * MLP_{expert_index[n, j]}(x[n]) in x's dtype, and is differentiable in x, gates and
every weight; sums accumulate in float32 at least. `reference.moe_mlp_reference` defines it; a Triton grouped GEMM replaces `_grouped_mlp` (or the whole
function) without the block noticing.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from . import reference
from .reference import ACTIVATIONS, activate, moe_mlp_reference

# SwiGLU's silu(a) * b as one Triton kernel each way on CUDA, in `mlp` and the experts (benchmarks/gated_mlp.py)
FUSED_SWIGLU = True


def mlp(x: Tensor, w1: Tensor, w2: Tensor, w3: Tensor | None, kind: str) -> Tensor:
    """One MLP without bias (see `reference.mlp`), SwiGLU's silu(a) * b fused on CUDA."""
    if kind == "swiglu" and FUSED_SWIGLU and x.is_cuda:
        from .swiglu import swiglu  # Triton is a Linux-only dependency: imported where CUDA tensors arrive

        return swiglu(x @ w1, x @ w3) @ w2
    return reference.mlp(x, w1, w2, w3, kind)


def moe_mlp(
    x: Tensor, expert_index: Tensor, gates: Tensor, w1: Tensor, w2: Tensor, w3: Tensor | None, kind: str
) -> Tensor:
    """Routed experts on sorted tokens: y[n] = sum_j gates[n, j] * MLP_{expert_index[n, j]}(x[n]) (see module doc)."""
    n, k = expert_index.shape
    flat = expert_index.reshape(-1)
    # Stable, so each expert sees its tokens in slot order; dropped slots (-1) sort first and are cut off, which
    # costs one host sync for the dynamic row count.
    order = torch.argsort(flat, stable=True)
    order = order[int((flat < 0).sum()) :]
    counts = torch.bincount(flat[order], minlength=w1.shape[0])
    if x.is_cuda:
        from .combine import combine, gather  # Triton is a Linux-only dependency: imported where CUDA tensors arrive

        # pos[n, j]: the sorted row of token n's slot j (-1: dropped); both ends of the dispatch read through it
        pos = torch.full((n * k,), -1, dtype=torch.int64, device=x.device).index_copy_(
            0, order, torch.arange(order.numel(), device=x.device)
        )
        pos = pos.view(n, k)
        return combine(_grouped_mlp(gather(x, order // k, pos), counts, w1, w2, w3, kind), pos, gates)
    out = _grouped_mlp(x[order // k], counts, w1, w2, w3, kind)
    acc = torch.promote_types(x.dtype, torch.float32)
    weighted = out.to(acc) * gates.reshape(-1)[order, None].to(acc)
    # Back to slot order without atomics, then a fixed-order sum over each token's k slots: deterministic.
    slots = torch.zeros(n * k, x.shape[1], dtype=acc, device=x.device).index_copy(0, order, weighted)
    return slots.view(n, k, -1).sum(1).to(x.dtype)


def _grouped_mlp(xs: Tensor, counts: Tensor, w1: Tensor, w2: Tensor, w3: Tensor | None, kind: str) -> Tensor:
    """The experts on tokens already sorted by expert: rows [offset_e, offset_e + counts[e]) of xs go to expert e."""
    if _grouped_mm_usable(xs, w1, w2, w3):
        gmm = partial(torch._grouped_mm, offs=counts.cumsum(0).to(torch.int32))
        h1, h3 = gmm(xs, w1), None if w3 is None else gmm(xs, w3)
        if kind == "swiglu" and FUSED_SWIGLU:
            from .swiglu import swiglu  # Triton is a Linux-only dependency: imported where CUDA tensors arrive

            return gmm(swiglu(h1, h3), w2)
        return gmm(activate(h1, h3, kind), w2)
    groups = xs.split(counts.tolist())
    return torch.cat([mlp(g, w1[e], w2[e], None if w3 is None else w3[e], kind) for e, g in enumerate(groups)])


def _grouped_mm_usable(xs: Tensor, *weights: Tensor | None) -> bool:
    """Whether torch's grouped GEMM has a real kernel here: CUDA, bf16, 16-byte-aligned rows, Hopper or newer.

    Elsewhere torch either rejects the call or falls back to its own loop over groups, so ours is no slower.
    """
    if not (hasattr(torch, "_grouped_mm") and xs.is_cuda and xs.dtype == torch.bfloat16):
        return False
    ws = [w for w in weights if w is not None]
    aligned = all(w.dtype == torch.bfloat16 and w.shape[-1] % 8 == 0 and w.shape[-2] % 8 == 0 for w in ws)
    return aligned and torch.cuda.get_device_capability(xs.device) >= (9, 0)


__all__ = ["ACTIVATIONS", "activate", "mlp", "moe_mlp", "moe_mlp_reference"]
