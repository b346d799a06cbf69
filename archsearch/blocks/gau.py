"""FLASH's gated attention unit: one shared QK base with per-use scale and offset, squared-ReLU attention, gating."""

from __future__ import annotations

from ._family import BlockFamily, Param, mean_causal_keys


class GAUFamily(BlockFamily):
    name, role, letter = "gau", "mixer", "G"
    doc = "gated attention unit (FLASH): squared-ReLU attention gated by a SiLU branch; mixed-chunk linear form optional"
    params = {
        "expansion": Param(float, 2.0, min=0.25, max=16, doc="hidden size e = round(expansion * d_model)"),
        "qk_dim": Param(int, 128, min=8, doc="shared query/key dimension s"),
        "chunk": Param(int, 0, min=0, doc="0: quadratic attention (FLASH-Quad); >0: mixed-chunk form with this chunk"),
    }

    def hidden(self, p, d_model: int) -> int:
        return round(p["expansion"] * d_model)

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
        return (s * e + (s + e) * min(p["chunk"], context)) * dtype_bytes


FAMILY = GAUFamily()
