"""Block-Recurrent Transformer cell: state vectors updated once per block of tokens, tokens attending to them."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels.attention import attention
from ._family import BlockFamily, Param, heads_divide
from ._layers import Block, RMSNorm, rotary


class BlockRecurrentFamily(BlockFamily):
    name, role, letter = "brt", "mixer", "B"
    doc = "block-recurrent cell: windowed token self-attention + cross-attention to a recurrent state with LSTM-style gates"
    params = {
        "heads": Param(int, 8, min=1, doc="attention heads, shared by the token and state sides"),
        "states": Param(int, 64, min=1, doc="recurrent state vectors"),
        "block_size": Param(int, 64, min=1, doc="tokens per block; the state updates once per block"),
        "rope_base": Param(float, 10000.0, min=1.0, doc="rotary embedding base of the token self-attention"),
    }

    def violations(self, p, d_model):
        out = heads_divide(d_model, p["heads"])
        if not out and (d_model // p["heads"]) % 2:
            out.append(("heads", f"head_dim {d_model // p['heads']} must be even for rotary embeddings"))
        return out

    def param_count(self, p, d_model):
        d = d_model
        # token q (self, cross), token k/v, state q (self, cross), state k/v, token out, state out: 2d^2 each;
        # input and forget gates (with biases) read the concatenated state attention results, 2d wide, as in the
        # published cell; learned initial state; the state's own RMSNorm
        return 12 * d * d + 2 * (2 * d * d + d) + p["states"] * d + d

    def flops_per_token(self, p, d_model, context):
        d, s, b = d_model, p["states"], min(p["block_size"], context)
        keys = b + (b + 1) / 2 if context > b else (b + 1) / 2  # previous block and the causal part of this one
        token_side = 2 * 6 * d * d + 4 * d * keys + 4 * d * s
        # state q (self, cross), k, v: 4d^2; state out: 2d^2; gates: 4d^2
        state_side = (2 * 10 * d * d * s + 4 * d * s * s + 4 * d * s * b) / b  # once per block, spread over its tokens
        return token_side + state_side

    def state_bytes(self, p, d_model, context, dtype_bytes):
        d, b = d_model, p["block_size"]
        # the state, its keys and values (read by every token of the block), the tokens' keys/values of the
        # previous block and of the current one so far
        return (3 * p["states"] * d + 2 * d * min(context, b + context % b)) * dtype_bytes

    def build(self, p, d_model):
        return BlockRecurrentCell(d_model, p["heads"], p["states"], p["block_size"], p["rope_base"])


class BlockRecurrentCell(Block):
    """The recurrent cell of the Block-Recurrent Transformer (Hutchins et al. 2022), as a mixer block.

    Token side: each token self-attends (RoPE) causally to the tokens of its block and of the previous one, and
    cross-attends to the state as it was at the start of its block; the two results, concatenated, are projected
    back to d. State side, at the end of each block: the (RMS-normalised) state self-attends and cross-attends
    to the block's tokens; the projected result z updates the state through LSTM-style gates that read the
    concatenated attention results h:  state' = state * sigmoid(W_f h + b_f + 1) + z * sigmoid(W_i h + b_i - 1).
    Keys and values are shared between directions (token k/v: token self- and state cross-attention; state k/v:
    state self- and token cross-attention); queries are not.

    Decoding keeps: the state, its keys and values, the position count, and the tokens' (unrotated) keys and
    values of the previous and current block; the current block's keys/values are what the state update
    reads when the block completes.
    """

    residual_params = ("tok_out.weight",)

    def __init__(self, d_model: int, heads: int, states: int, block: int, rope_base: float) -> None:
        super().__init__()
        d = d_model
        self.heads, self.head_dim, self.block, self.rope_base = heads, d // heads, block, rope_base
        self.tok_q_self, self.tok_q_cross = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.tok_k, self.tok_v = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.tok_out = nn.Linear(2 * d, d, bias=False)
        self.state_q_self, self.state_q_cross = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.state_k, self.state_v = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.state_out = nn.Linear(2 * d, d, bias=False)
        self.input_gate, self.forget_gate = nn.Linear(2 * d, d), nn.Linear(2 * d, d)
        self.initial_state = nn.Parameter(torch.empty(states, d))
        self.state_norm = RMSNorm(d)
        projections = (self.tok_q_self, self.tok_q_cross, self.tok_k, self.tok_v, self.tok_out)
        projections += (self.state_q_self, self.state_q_cross, self.state_k, self.state_v, self.state_out)
        for linear in projections:
            nn.init.normal_(linear.weight, std=0.02)
        # as in the published cell: small gate kernels and biases, so the state starts mostly remembering
        # (forget gate ~sigmoid(1)) and admitting little (input gate ~sigmoid(-1))
        for gate in (self.input_gate, self.forget_gate):
            nn.init.normal_(gate.weight, std=(0.1 / (2 * d)) ** 0.5)
            nn.init.normal_(gate.bias, std=0.1)
        nn.init.normal_(self.initial_state, std=0.1)

    def _heads(self, x: Tensor) -> Tensor:
        return x.view(*x.shape[:-1], self.heads, self.head_dim)

    def _token_side(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Self- and cross-attention queries, keys and values of tokens x [B, T, d], each [B, T, H, hd]."""
        return tuple(self._heads(f(x)) for f in (self.tok_q_self, self.tok_q_cross, self.tok_k, self.tok_v))

    def _state_kv(self, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The normalised state, and its keys and values."""
        s = self.state_norm(state)
        return s, self._heads(self.state_k(s)), self._heads(self.state_v(s))

    def _next_state(self, state: Tensor, s: Tensor, state_k: Tensor, state_v: Tensor, k_blk: Tensor, v_blk: Tensor) -> Tensor:
        """The state after a block whose tokens' (unrotated) keys and values are k_blk, v_blk [B, block, H, hd]; s is
        the normalised state (`_state_kv`, computed once a block)."""
        own = attention(self._heads(self.state_q_self(s)), state_k, state_v, causal=False)
        tokens = attention(self._heads(self.state_q_cross(s)), k_blk, v_blk, causal=False)
        h = torch.cat((own.flatten(-2), tokens.flatten(-2)), dim=-1)  # [B, S, 2d]
        forget = torch.sigmoid(self.forget_gate(h) + 1.0)
        admit = torch.sigmoid(self.input_gate(h) - 1.0)
        return state * forget + self.state_out(h) * admit

    def forward(self, x: Tensor) -> Tensor:
        batch, t, d = x.shape
        b = self.block
        pad = -t % b  # padded tokens only follow the real ones, and the state after the last block is unused
        x = F.pad(x, (0, 0, 0, pad))
        n_blocks = (t + pad) // b
        positions = torch.arange(t + pad, device=x.device)
        q_self, q_cross, k, v = self._token_side(x)
        local = self._local_attention(
            rotary(q_self, positions, self.rope_base), rotary(k, positions, self.rope_base), v
        )

        state = self.initial_state.to(x.dtype).expand(batch, -1, -1)
        state_ks, state_vs = [], []
        for g in range(n_blocks):
            normed, state_k, state_v = self._state_kv(state)
            state_ks.append(state_k)
            state_vs.append(state_v)
            if g + 1 < n_blocks:
                blk = slice(g * b, (g + 1) * b)
                state = self._next_state(state, normed, state_k, state_v, k[:, blk], v[:, blk])
        # every block's tokens read the state of their block's start: one batched cross-attention over blocks
        q_cross = q_cross.reshape(batch * n_blocks, b, self.heads, self.head_dim)
        state_k = torch.stack(state_ks, dim=1).flatten(0, 1)
        state_v = torch.stack(state_vs, dim=1).flatten(0, 1)
        cross = attention(q_cross, state_k, state_v, causal=False).reshape(batch, t + pad, d)
        return self.tok_out(torch.cat((local.flatten(-2), cross), dim=-1))[:, :t]

    def _local_attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Each token over its block's earlier tokens and the whole previous block; [B, T, H, hd], T a multiple of block."""
        batch, t = q.shape[:2]
        b = self.block
        first = attention(q[:, :b], k[:, :b], v[:, :b])
        if t == b:
            return first

        def pairs(x: Tensor) -> Tensor:  # [B * (G-1), 2b, H, hd]: (previous block, block) for blocks 1..G-1
            prev, cur = x[:, :-b].unflatten(1, (-1, b)), x[:, b:].unflatten(1, (-1, b))
            return torch.cat((prev, cur), dim=2).flatten(0, 1)

        rest = attention(q[:, b:].reshape(-1, b, *q.shape[2:]), pairs(k), pairs(v))  # queries are the last b of 2b
        return torch.cat((first, rest.reshape(batch, t - b, *q.shape[2:])), dim=1)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        state = self.initial_state.to(device=device, dtype=dtype).expand(batch, -1, -1)
        _, state_k, state_v = self._state_kv(state)
        empty = torch.zeros(batch, 0, self.heads, self.head_dim, device=device, dtype=dtype)
        return {"state": state, "state_k": state_k, "state_v": state_v, "k": empty, "v": empty, "pos": 0}

    def step(self, x: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        pos = state["pos"]
        q_self, q_cross, k, v = self._token_side(x[:, None])
        k, v = torch.cat((state["k"], k), dim=1), torch.cat((state["v"], v), dim=1)
        positions = torch.arange(pos - k.shape[1] + 1, pos + 1, device=x.device)
        q_self = rotary(q_self, positions[-1:], self.rope_base)
        local = attention(q_self, rotary(k, positions, self.rope_base), v)
        cross = attention(q_cross, state["state_k"], state["state_v"], causal=False)
        y = self.tok_out(torch.cat((local.flatten(-2), cross.flatten(-2)), dim=-1))[:, 0]
        new = {**state, "k": k, "v": v, "pos": pos + 1}
        if (pos + 1) % self.block == 0:  # the block is complete: update the state; it becomes the previous block
            k_blk, v_blk = k[:, -self.block :], v[:, -self.block :]
            old = state["state"]  # normalised again here, once a block, rather than kept in the decoding state
            new["state"] = self._next_state(old, self.state_norm(old), state["state_k"], state["state_v"], k_blk, v_blk)
            _, new["state_k"], new["state_v"] = self._state_kv(new["state"])
            new["k"], new["v"] = k_blk, v_blk
        return y, new


FAMILY = BlockRecurrentFamily()
