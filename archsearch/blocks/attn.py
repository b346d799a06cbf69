"""Global causal multi-head attention with rotary positions and optional grouped-query heads."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..kernels.attention import attention
from ._family import BlockFamily, Param, Params, heads_divide, mean_causal_keys
from ._layers import Block, ShortConv, rotary


class AttentionFamily(BlockFamily):
    name, role, letter = "attn", "mixer", "A"
    doc = "global causal attention (RoPE, optional grouped-query heads)"
    params = {
        "heads": Param(int, 8, min=1, doc="query heads; head_dim = d_model / heads"),
        "kv_heads": Param(int, None, min=1, doc="key/value heads (grouped-query); defaults to heads"),
        "rope_base": Param(float, 10000.0, min=1.0, doc="rotary embedding base"),
        "key_conv": Param(int, 0, min=0, max=16, doc="short causal convolution on the keys (0: none); recall needs it"),
    }

    def resolve(self, params, d_model):
        if params.get("kv_heads") is None:
            params["kv_heads"] = params["heads"]
        return params

    def window(self, p: Params) -> int | None:
        return None

    def violations(self, p, d_model):
        out = heads_divide(d_model, p["heads"])
        if p["heads"] % p["kv_heads"]:
            out.append(("kv_heads", f"{p['kv_heads']} must divide heads {p['heads']}"))
        elif not out and (d_model // p["heads"]) % 2:
            out.append(("heads", f"head_dim {d_model // p['heads']} must be even for rotary embeddings"))
        return out

    def param_count(self, p, d_model):
        kv_dim = p["kv_heads"] * (d_model // p["heads"])
        return 2 * d_model * d_model + 2 * d_model * kv_dim + kv_dim * p["key_conv"]  # Wq, Wo; Wk, Wv; key convolution

    def flops_per_token(self, p, d_model, context):
        keys = mean_causal_keys(context, self.window(p))
        return 2 * self.param_count(p, d_model) + 4 * d_model * keys  # projections; QK^T and AV

    def state_bytes(self, p, d_model, context, dtype_bytes):
        cached = min(context, self.window(p) or context)
        kv_dim = p["kv_heads"] * (d_model // p["heads"])
        return (2 * cached + max(p["key_conv"] - 1, 0)) * kv_dim * dtype_bytes  # K and V cache; the convolution's inputs

    def build(self, p, d_model):
        return Attention(d_model, p["heads"], p["kv_heads"], p["rope_base"], window=self.window(p), key_conv=p["key_conv"])


class Attention(Block):
    """Causal multi-head attention with rotary positions and grouped-query heads, global or over a sliding window.

    Decoding keeps the rotated keys and the values of every past token (global) or of the last `window` tokens
    (sliding window: the cache rolls and never grows past the window), and the position count for RoPE.
    """

    residual_params = ("wo.weight",)

    def __init__(self, d_model: int, heads: int, kv_heads: int, rope_base: float, window: int | None = None,
                 key_conv: int = 0) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, d_model // heads
        self.rope_base, self.window = rope_base, window
        self.wq = nn.Linear(d_model, heads * self.head_dim, bias=False)
        self.wk = nn.Linear(d_model, kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(d_model, kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(heads * self.head_dim, d_model, bias=False)
        for linear in (self.wq, self.wk, self.wv, self.wo):
            nn.init.normal_(linear.weight, std=0.02)
        # a key that also carries the tokens before it lets one layer find "the token after k": associative recall
        # without first learning a previous-token head (which pure attention takes thousands of steps to find)
        self.key_conv = ShortConv(kv_heads * self.head_dim, key_conv) if key_conv else None

    def _qkv(self, x: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.heads, self.head_dim)
        k = k.view(b, t, self.kv_heads, self.head_dim)
        v = self.wv(x).view(b, t, self.kv_heads, self.head_dim)
        return rotary(q, positions, self.rope_base), rotary(k, positions, self.rope_base), v

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        k = self.wk(x) if self.key_conv is None else self.key_conv(self.wk(x))
        q, k, v = self._qkv(x, k, torch.arange(t, device=x.device))
        return self.wo(attention(q, k, v, window=self.window).reshape(b, t, -1))

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        empty = torch.zeros(batch, 0, self.kv_heads, self.head_dim, device=device, dtype=dtype)
        conv = self.key_conv.init_state(batch, device, dtype) if self.key_conv is not None else None
        return {"k": empty, "v": empty, "pos": 0, "key_conv": conv}

    def step(self, x: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        pos, k, conv = state["pos"], self.wk(x), state["key_conv"]
        if self.key_conv is not None:
            k, conv = self.key_conv.step(k, conv)
        q, k, v = self._qkv(x[:, None], k[:, None], torch.full((1,), pos, device=x.device))
        k, v = torch.cat((state["k"], k), dim=1), torch.cat((state["v"], v), dim=1)
        if self.window is not None:
            k, v = k[:, -self.window :], v[:, -self.window :]
        y = self.wo(attention(q, k, v, window=self.window).reshape(x.shape[0], -1))
        return y, {"k": k, "v": v, "pos": pos + 1, "key_conv": conv}


FAMILY = AttentionFamily()
