"""DeltaNet: linear attention whose state is updated by the delta rule, computed chunkwise (WY form)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels.delta_rule import chunk_delta_rule, delta_rule_step
from ._family import BlockFamily, Param, heads_divide
from ._layers import Block, RMSNorm, ShortConv


class DeltaNetFamily(BlockFamily):
    name, role, letter = "deltanet", "mixer", "D"
    doc = "DeltaNet: q/k/v/beta projections, short convolutions, L2-normalised q/k, delta rule, output norm and gate"
    params = {
        "heads": Param(int, 4, min=1, doc="heads; each keeps a head_dim x head_dim state"),
        "conv_size": Param(int, 4, min=0, max=16, doc="short causal convolution on q, k, v (0: none)"),
        "qv_conv": Param(bool, True, doc="convolve q and v too (false: k only; MQAR learns several times faster)",
                         omit_default=True),
        "gate": Param(bool, True, doc="output gate: RMSNorm(o) * SiLU(W_g x)"),
    }

    def violations(self, p, d_model):
        return heads_divide(d_model, p["heads"])

    def param_count(self, p, d_model):
        d, head_dim = d_model, d_model // p["heads"]
        return (
            4 * d * d  # Wq, Wk, Wv, Wo
            + d * p["heads"]  # W_beta
            + _convs(p) * d * p["conv_size"]  # depthwise short convolutions on k (and q, v)
            + (d * d if p["gate"] else 0)  # W_g
            + head_dim  # output RMSNorm, shared by the heads
        )

    def flops_per_token(self, p, d_model, context):
        d, head_dim = d_model, d_model // p["heads"]
        matmul = 4 * d * d + d * p["heads"] + (d * d if p["gate"] else 0)
        # per head and token: S k, the rank-1 update and S^T q, each head_dim^2 multiply-adds
        return 2 * matmul + 2 * _convs(p) * d * p["conv_size"] + 6 * d * head_dim

    def state_bytes(self, p, d_model, context, dtype_bytes):
        head_dim = d_model // p["heads"]
        conv_cache = _convs(p) * d_model * max(p["conv_size"] - 1, 0)
        return p["heads"] * head_dim * head_dim * 4 + conv_cache * dtype_bytes  # the state is kept in float32

    def build(self, p, d_model):
        return DeltaNet(d_model, p["heads"], p["conv_size"], p["gate"], qv_conv=p["qv_conv"])


def _convs(p) -> int:
    return 3 if p["qv_conv"] else 1


FAMILY = DeltaNetFamily()


class DeltaNetState(NamedTuple):
    """What DeltaNet keeps while decoding: the delta-rule state per head and the short convolutions' caches."""

    recurrent: Tensor  # [B, heads, head_dim, head_dim] in float32, key space to value space
    conv: tuple[Tensor | None, ...]  # q, k, v caches [B, d_model, conv_size - 1] (None: not convolved); empty without convolutions


class DeltaNet(Block):
    """The DeltaNet layer (Yang et al. 2024; fla's `DeltaNet` with use_beta, silu, l2 and no biases).

    q, k, v = SiLU(ShortConv(W x)), q and k L2-normalised per head, beta = sigmoid(W_beta x) per head;
    the delta rule runs per head (see `archsearch.kernels.delta_rule`), then o = RMSNorm(o) per head,
    gated by SiLU(W_g x) when `gate`, and projected by W_o. With `qv_conv` false only k is convolved: the key at a
    value's position then carries the token before it while q and v stay the current token's, which associative
    recall needs (fla convolves all three).
    """

    residual_params = ("o_proj.weight",)

    def __init__(self, d_model: int, heads: int, conv_size: int, gate: bool, norm_eps: float = 1e-6, qv_conv: bool = True) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, d_model // heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.b_proj = nn.Linear(d_model, heads, bias=False)
        # named as fla names them, so an export to fla maps parameters one to one
        self.q_conv1d = ShortConv(d_model, conv_size) if conv_size and qv_conv else None
        self.k_conv1d = ShortConv(d_model, conv_size) if conv_size else None
        self.v_conv1d = ShortConv(d_model, conv_size) if conv_size and qv_conv else None
        self.g_proj = nn.Linear(d_model, d_model, bias=False) if gate else None
        self.o_norm = RMSNorm(self.head_dim, eps=norm_eps)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.b_proj, self.g_proj, self.o_proj):
            if proj is not None:
                nn.init.normal_(proj.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:  # [B, T, d]
        q, k, v = (y if conv is None else conv(y) for y, conv in zip(self._projections(x), self._convs(), strict=True))
        q, k, v, beta = self._heads(x, q, k, v)
        o, _ = chunk_delta_rule(q, k, v, beta)
        return self._output(x, o)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> DeltaNetState:
        recurrent = torch.zeros(batch, self.heads, self.head_dim, self.head_dim, device=device, dtype=torch.float32)
        convs = self._convs() if self.k_conv1d is not None else ()
        conv = tuple(None if c is None else c.init_state(batch, device, dtype) for c in convs)
        return DeltaNetState(recurrent, conv)

    def step(self, x: Tensor, state: DeltaNetState) -> tuple[Tensor, DeltaNetState]:  # x [B, d]
        q, k, v = self._projections(x)
        conv = state.conv
        if self.k_conv1d is not None:
            steps = [(y, None) if c is None else c.step(y, cache) for y, c, cache in zip((q, k, v), self._convs(), conv, strict=True)]
            (q, k, v), conv = zip(*steps, strict=True)
        q, k, v, beta = self._heads(x, q, k, v)
        o, recurrent = delta_rule_step(q, k, v, beta, state.recurrent)
        return self._output(x, o), DeltaNetState(recurrent, conv)

    def _projections(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def _convs(self) -> tuple[ShortConv | None, ShortConv | None, ShortConv | None]:
        return self.q_conv1d, self.k_conv1d, self.v_conv1d

    def _heads(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """SiLU, split into heads, L2-normalise q and k; beta per head. Works on [B, T, d] and on [B, d]."""
        q, k, v = (F.silu(y).unflatten(-1, (self.heads, self.head_dim)) for y in (q, k, v))
        return _l2_normalise(q), _l2_normalise(k), v, self.b_proj(x).sigmoid()

    def _output(self, x: Tensor, o: Tensor) -> Tensor:
        """Per-head RMSNorm, the optional SiLU gate, and W_o; o is [..., heads, head_dim] beside x [..., d]."""
        o = self.o_norm(o).flatten(-2)
        if self.g_proj is not None:
            o = o * F.silu(self.g_proj(x))
        return self.o_proj(o)


def _l2_normalise(x: Tensor, eps: float = 1e-6) -> Tensor:
    # eps inside the root, as fla's l2norm puts it, so results match fla's kernels
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)
