"""Causal attention in plain PyTorch: the definition the fast forms are tested against.

Layout [B, T, H, D]. Keys and values may have fewer heads than queries (grouped-query attention: query head h
reads key/value head h // (H / H_kv)). With fewer queries than keys, the queries are the last ones of the key
sequence (as in decoding with a cache), so query i sits at position T_k - T_q + i.
"""

from __future__ import annotations

import torch
from torch import Tensor


def visible(t_q: int, t_k: int, window: int | None, device: torch.device | str = "cpu") -> Tensor:
    """[t_q, t_k] booleans: whether query i sees key j (causal; within the `window` most recent keys when given)."""
    i = torch.arange(t_q, device=device)[:, None] + (t_k - t_q)
    j = torch.arange(t_k, device=device)[None, :]
    seen = j <= i
    if window is not None:
        seen &= j > i - window
    return seen


def attention_reference(
    q: Tensor, k: Tensor, v: Tensor, window: int | None = None, scale: float | None = None, causal: bool = True
) -> Tensor:
    """softmax(q k^T * scale) v over the visible keys, in fp32 at least: q [B, T_q, H, D], k and v [B, T_k, H_kv, D]."""
    group = q.shape[2] // k.shape[2]
    k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    acc = torch.promote_types(q.dtype, torch.float32)
    scores = torch.einsum("bqhd,bkhd->bhqk", q.to(acc), k.to(acc)) * scale
    if causal:
        scores = scores.masked_fill(~visible(q.shape[1], k.shape[1], window, q.device), float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v.to(acc)).to(q.dtype)
