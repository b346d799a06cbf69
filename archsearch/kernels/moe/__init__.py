"""Mixture-of-experts dispatch: the public form blocks call, tokens sorted by expert and run as grouped matmuls.

`moe_mlp(x, expert_index, gates, w1, w2, w3, kind)` is the whole routed-expert computation after the router has
decided: x [N, d] tokens; expert_index [N, k] integer (the k experts of each token, -1 for a slot dropped by
capacity); gates [N, k] the weights of those slots; stacked expert weights w1, w3 [E, d, hidden], w2 [E, hidden, d]
(w3 None for the plain MLP); kind one of "swiglu", "geglu", "reglu", "mlp". It returns
y [N, d] = sum_j gates[n, j] * MLP_{expert_index[n, j]}(x[n]) in x's dtype, and is differentiable in x, gates and
every weight; sums accumulate in float32 at least. `reference.moe_mlp_reference` defines it; a Triton grouped GEMM
replaces `_grouped_mlp` (or the whole function) without the block noticing.
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
    """One MLP without bias (see `reference.mlp`); a gated MLP's two input projections run as one GEMM."""
    x, w1, w2, w3 = _autocast(x, w1, w2, w3)
    if w3 is None:
        return reference.mlp(x, w1, w2, w3, kind)
    return _activate_packed(x @ torch.cat([w1, w3], -1), kind) @ w2


def moe_mlp(
    x: Tensor, expert_index: Tensor, gates: Tensor, w1: Tensor, w2: Tensor, w3: Tensor | None, kind: str
) -> Tensor:
    """Routed experts on sorted tokens: y[n] = sum_j gates[n, j] * MLP_{expert_index[n, j]}(x[n]) (see module doc)."""
    x, w1, w2, w3 = _autocast(x, w1, w2, w3)
    n, k = expert_index.shape
    experts = w1.shape[0]
    flat = expert_index.reshape(-1)
    dropped = flat < 0
    # Dropped slots (-1) form a last group that no expert reads, so every row count is known on the host: no sync
    # stalls the launch queue. Small integer keys cut the radix sort's passes; stable, so each expert sees its
    # tokens in slot order.
    key = torch.where(dropped, experts, flat).to(torch.int16 if experts < 2**15 else torch.int32)
    sorted_key, order = torch.sort(key, stable=True)
    bounds = torch.arange(1, experts + 1, device=x.device, dtype=key.dtype)
    ends = torch.searchsorted(sorted_key, bounds, out_int32=True)  # rows [ends[e-1], ends[e]) go to expert e
    # pos[n, j]: the sorted row of token n's slot j (-1: dropped); both ends of the dispatch read through it
    pos = torch.empty_like(order).index_copy_(0, order, torch.arange(n * k, device=x.device))
    pos = pos.masked_fill_(dropped, -1).view(n, k)
    if x.is_cuda:
        from .combine import combine, gather  # Triton is a Linux-only dependency: imported where CUDA tensors arrive

        return combine(_grouped_mlp(gather(x, order // k, pos), ends, w1, w2, w3, kind), pos, gates)
    out = _grouped_mlp(x[order // k], ends, w1, w2, w3, kind)
    acc = torch.promote_types(x.dtype, torch.float32)
    # a fixed-order sum over each token's k slots, no atomics: deterministic
    slots = out[pos.clamp_min(0).view(-1)].view(n, k, -1).to(acc)
    return (slots * gates.masked_fill(pos < 0, 0).to(acc)[..., None]).sum(1).to(x.dtype)


def _grouped_mlp(xs: Tensor, ends: Tensor, w1: Tensor, w2: Tensor, w3: Tensor | None, kind: str) -> Tensor:
    """The experts on rows sorted by expert: rows [ends[e - 1], ends[e]) of xs go to expert e (ends[-1] = 0).

    Rows from ends[-1] on belong to no expert; their output rows are unspecified and must not be read.
    """
    if _grouped_mm_usable(xs, w1, w2, w3):
        gmm = partial(torch._grouped_mm, offs=ends)
        h = gmm(xs, w1 if w3 is None else torch.cat([w1, w3], -1))
        return gmm(_activate_packed(h, kind) if w3 is not None else activate(h, None, kind), w2)
    if torch.compiler.is_compiling():
        return _masked_grouped_mlp(xs, ends, w1, w2, w3, kind)
    groups = xs.tensor_split(ends.tolist())  # the experts' groups, then the rows of no expert
    parts = [mlp(g, w1[e], w2[e], None if w3 is None else w3[e], kind) for e, g in enumerate(groups[:-1])]
    return torch.cat([*parts, groups[-1].new_zeros(groups[-1].shape[0], w2.shape[-1])])


def _masked_grouped_mlp(xs: Tensor, ends: Tensor, w1: Tensor, w2: Tensor, w3: Tensor | None, kind: str) -> Tensor:
    """`_grouped_mlp` without data-dependent shapes, for a compiled graph where no grouped GEMM runs: each expert
    on every row, kept on its own rows (the experts' work times the number of experts; rows of no expert get 0)."""
    row = torch.arange(xs.shape[0], device=xs.device)
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    out = xs.new_zeros(xs.shape[0], w2.shape[-1])
    for e in range(w1.shape[0]):
        mine = ((row >= starts[e]) & (row < ends[e]))[:, None]
        out = torch.where(mine, mlp(xs, w1[e], w2[e], None if w3 is None else w3[e], kind), out)
    return out


def _activate_packed(h: Tensor, kind: str) -> Tensor:
    """A gated MLP's hidden activation from its packed projection h = x [w1 | w3] [..., 2 * hidden]."""
    if kind == "swiglu" and FUSED_SWIGLU and h.is_cuda:
        from .swiglu import swiglu  # Triton is a Linux-only dependency: imported where CUDA tensors arrive

        return swiglu(h)
    h1, h3 = h.chunk(2, dim=-1)
    return activate(h1, h3, kind)


def _autocast(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """The tensors in autocast's dtype while autocast is on, as F.linear would cast them: then the weights are
    concatenated in bf16 and the grouped GEMM, which autocast does not cover and which takes bf16 only, runs (with
    float32 parameters under autocast it would fall back to the loop over experts)."""
    device = tensors[0].device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(None if t is None else t.to(dtype) for t in tensors)


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
