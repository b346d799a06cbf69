"""Block-Recurrent Transformer cell: state vectors updated once per block of tokens, tokens attending to them."""

from __future__ import annotations

from ._family import BlockFamily, Param, heads_divide


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
        return heads_divide(d_model, p["heads"])

    def param_count(self, p, d_model):
        d = d_model
        # token q (self, cross), token k/v, state q (self, cross), state k/v, token out, state out: 2d^2 each;
        # input and forget gates with biases; learned initial state; the state's own RMSNorm
        return 12 * d * d + (2 * d * d + 2 * d) + p["states"] * d + d

    def flops_per_token(self, p, d_model, context):
        d, s, b = d_model, p["states"], min(p["block_size"], context)
        keys = b + (b + 1) / 2 if context > b else (b + 1) / 2  # previous block and the causal part of this one
        token_side = 2 * 6 * d * d + 4 * d * keys + 4 * d * s
        state_side = (2 * 8 * d * d * s + 4 * d * s * s + 4 * d * s * b) / b  # once per block, spread over its tokens
        return token_side + state_side

    def state_bytes(self, p, d_model, context, dtype_bytes):
        d, b = d_model, p["block_size"]
        return (p["states"] * d + 2 * d * min(context, 2 * b)) * dtype_bytes


FAMILY = BlockRecurrentFamily()
