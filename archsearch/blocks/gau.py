"""FLASH's gated attention unit: one shared QK base with per-use scale and offset, squared-ReLU attention, gating."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._family import BlockFamily, Param, mean_causal_keys
from ._layers import Block, rotary

QUAD_NORM = 512  # FLASH-Quad's normaliser: fixed, not the sequence length, so a decoded token sees what forward saw
ROPE_BASE = 10000.0


class GAUFamily(BlockFamily):
    name, role, letter = "gau", "mixer", "G"
    doc = (
        "gated attention unit (FLASH): squared-ReLU attention gated by a SiLU branch; mixed-chunk linear form optional"
    )
    params = {
        "expansion": Param(float, 2.0, min=0.25, max=16, doc="hidden size e = round(expansion * d_model)"),
        "qk_dim": Param(int, 128, min=8, doc="shared query/key dimension s"),
        "chunk": Param(int, 0, min=0, doc="0: quadratic attention (FLASH-Quad); >0: mixed-chunk form with this chunk"),
    }

    def hidden(self, p, d_model: int) -> int:
        return round(p["expansion"] * d_model)

    def violations(self, p, d_model):
        if p["qk_dim"] % 2:
            return [("qk_dim", f"{p['qk_dim']} must be even for rotary embeddings")]
        return []

    def param_count(self, p, d_model):
        d, e, s = d_model, self.hidden(p, d_model), p["qk_dim"]
        uses = 4 if p["chunk"] else 2  # per-dim scale and offset for q, k (and the linear part's q, k)
        return 2 * d * e + d * s + 2 * uses * s + e * d  # W_uv, W_z, scale/offset, W_o

    def flops_per_token(self, p, d_model, context):
        d, e, s = d_model, self.hidden(p, d_model), p["qk_dim"]
        proj = 2 * (3 * d * e + d * s)
        if not p["chunk"]:
            return proj + 2 * (s + e) * mean_causal_keys(context)
        return proj + 2 * (s + e) * (min(p["chunk"], context) + 1) / 2 + 4 * s * e

    def state_bytes(self, p, d_model, context, dtype_bytes):
        e, s = self.hidden(p, d_model), p["qk_dim"]
        if not p["chunk"]:
            return (s + e) * context * dtype_bytes
        return (s * e + (s + e) * (context % p["chunk"])) * dtype_bytes  # linear state; the current chunk so far

    def build(self, p, d_model):
        return GatedAttentionUnit(d_model, self.hidden(p, d_model), p["qk_dim"], p["chunk"])


def squared_relu_scores(q: Tensor, k: Tensor) -> Tensor:
    """relu(q k^T / sqrt(s))^2 for q [..., T_q, s], k [..., T_k, s] -> [..., T_q, T_k]."""
    return F.relu(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).square()


def quadratic_attention(q: Tensor, k: Tensor, v: Tensor, norm: float) -> Tensor:
    """FLASH-Quad: o_i = sum_{j <= i} relu(q_i . k_j / sqrt(s))^2 v_j / norm; q, k [B, T, s], v [B, T, e]."""
    t = q.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    return squared_relu_scores(q, k).masked_fill(~causal, 0) @ v / norm


def mixed_chunk_attention(qq: Tensor, kq: Tensor, ql: Tensor, kl: Tensor, v: Tensor, chunk: int) -> Tensor:
    """FLASH's mixed-chunk attention for causal language models: [B, T, s] queries/keys, v [B, T, e] -> [B, T, e].

    o_i = (sum over j <= i in i's chunk of relu(qq_i . kq_j / sqrt(s))^2 v_j
           + sum over j in the chunks before i's of (ql_i . kl_j) v_j) / chunk
    The linear part reads a cumulative sum of kl^T v over previous chunks only, so a token never sees a later
    token of its own chunk through it.
    """
    b, t, _ = qq.shape
    pad = -t % chunk
    if pad:  # padded tokens come after every real one, so causality keeps them out of real outputs
        qq, kq, ql, kl, v = (F.pad(x, (0, 0, 0, pad)) for x in (qq, kq, ql, kl, v))
    g = (t + pad) // chunk
    qq, kq, ql, kl, v = (x.reshape(b, g, chunk, x.shape[-1]) for x in (qq, kq, ql, kl, v))
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=qq.device).tril()
    local = squared_relu_scores(qq, kq).masked_fill(~causal, 0) @ v
    kv = kl.transpose(-1, -2) @ v  # [B, G, s, e], one per chunk
    before = torch.cat((torch.zeros_like(kv[:, :1]), kv[:, :-1].cumsum(dim=1)), dim=1)
    out = (local + ql @ before) / chunk
    return out.reshape(b, g * chunk, -1)[:, :t]


class GatedAttentionUnit(Block):
    """FLASH's gated attention unit (Hua et al. 2022): W_o(u * (A v)) with u, v = SiLU(W_uv x), A from z = SiLU(W_z x).

    Queries and keys are per-use scale and offset of the shared base z, with RoPE: two uses (q, k) for the
    quadratic form, four (local q, k; linear q, k) for the mixed-chunk form. Decoding keeps: quadratic, the
    rotated keys and the values of every past token; mixed-chunk, the linear state sum kl^T v over completed
    chunks [s, e] and the current chunk's base z and values (its keys are rebuilt from z, which is what the
    state-bytes formula counts).
    """

    residual_params = ("w_o.weight",)

    def __init__(self, d_model: int, hidden: int, qk_dim: int, chunk: int = 0) -> None:
        super().__init__()
        self.hidden, self.qk_dim, self.chunk = hidden, qk_dim, chunk
        self.w_uv = nn.Linear(d_model, 2 * hidden, bias=False)
        self.w_z = nn.Linear(d_model, qk_dim, bias=False)
        uses = 4 if chunk else 2
        self.gamma = nn.Parameter(torch.empty(uses, qk_dim))
        self.beta = nn.Parameter(torch.zeros(uses, qk_dim))
        self.w_o = nn.Linear(hidden, d_model, bias=False)
        # the attention is quartic in z: fan-in scaled inputs keep SiLU's inputs near unit variance, where std 0.02
        # at small widths would leave A ~1e-10; the quadratic uses start near q = k = z (FLASH's scale-offset with
        # unit scale), the linear uses near zero as in FLASH, since the unnormalised linear sum grows with length
        nn.init.normal_(self.w_uv.weight, std=d_model**-0.5)
        nn.init.normal_(self.w_z.weight, std=d_model**-0.5)
        nn.init.normal_(self.gamma, std=0.02)
        with torch.no_grad():
            self.gamma[:2] += 1.0
        nn.init.normal_(self.w_o.weight, std=0.02)

    def _branches(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        u, v = F.silu(self.w_uv(x)).chunk(2, dim=-1)
        return u, v, F.silu(self.w_z(x))

    def _uses(self, z: Tensor, positions: Tensor) -> tuple[Tensor, ...]:
        """Per-use queries and keys from the base z [B, T, s]: (q, k) or (local q, local k, linear q, linear k)."""
        base = z[..., None, :] * self.gamma + self.beta  # [B, T, uses, s]: the uses ride rotary's head axis
        return rotary(base, positions, ROPE_BASE).unbind(dim=-2)

    def forward(self, x: Tensor) -> Tensor:
        u, v, z = self._branches(x)
        qk = self._uses(z, torch.arange(x.shape[1], device=x.device))
        o = mixed_chunk_attention(*qk, v, self.chunk) if self.chunk else quadratic_attention(*qk, v, QUAD_NORM)
        return self.w_o(u * o)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        def empty(width: int) -> Tensor:
            return torch.zeros(batch, 0, width, device=device, dtype=dtype)

        if not self.chunk:
            return {"k": empty(self.qk_dim), "v": empty(self.hidden), "pos": 0}
        kv = torch.zeros(batch, self.qk_dim, self.hidden, device=device, dtype=dtype)
        return {"kv": kv, "z": empty(self.qk_dim), "v": empty(self.hidden), "pos": 0}

    def step(self, x: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        pos = state["pos"]
        u, v, z = self._branches(x[:, None])
        if not self.chunk:
            q, k = self._uses(z, torch.full((1,), pos, device=x.device))
            k, v = torch.cat((state["k"], k), dim=1), torch.cat((state["v"], v), dim=1)
            o = squared_relu_scores(q, k) @ v / QUAD_NORM
            return self.w_o(u * o)[:, 0], {"k": k, "v": v, "pos": pos + 1}
        z, v = torch.cat((state["z"], z), dim=1), torch.cat((state["v"], v), dim=1)
        n = z.shape[1]  # tokens of the current chunk so far, this one included
        qq, kq, ql, kl = self._uses(z, torch.arange(pos - n + 1, pos + 1, device=x.device))
        o = (squared_relu_scores(qq[:, -1:], kq) @ v + ql[:, -1:] @ state["kv"]) / self.chunk
        kv = state["kv"]
        if n == self.chunk:  # the chunk is complete: fold it into the linear state, start an empty one
            kv = kv + kl.transpose(-1, -2) @ v
            z, v = z[:, :0], v[:, :0]
        return self.w_o(u * o)[:, 0], {"kv": kv, "z": z, "v": v, "pos": pos + 1}


FAMILY = GAUFamily()
