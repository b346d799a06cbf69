"""Causal sliding-window attention: each token sees the `window` most recent tokens, itself included."""

from __future__ import annotations

from ._family import Param, Params
from .attn import AttentionFamily


class SlidingWindowFamily(AttentionFamily):
    name, role, letter = "swa", "mixer", "S"
    doc = "causal sliding-window attention (RoPE, optional grouped-query heads)"
    params = {
        **AttentionFamily.params,
        "window": Param(int, 512, min=1, doc="tokens each query sees, itself included"),
    }

    def window(self, p: Params) -> int | None:
        return p["window"]


FAMILY = SlidingWindowFamily()
