"""Global causal multi-head attention with rotary positions and optional grouped-query heads."""

from __future__ import annotations

from ._family import BlockFamily, Param, Params, heads_divide, mean_causal_keys


class AttentionFamily(BlockFamily):
    name, role, letter = "attn", "mixer", "A"
    doc = "global causal attention (RoPE, optional grouped-query heads)"
    params = {
        "heads": Param(int, 8, min=1, doc="query heads; head_dim = d_model / heads"),
        "kv_heads": Param(int, None, min=1, doc="key/value heads (grouped-query); defaults to heads"),
        "rope_base": Param(float, 10000.0, min=1.0, doc="rotary embedding base"),
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
        head_dim = d_model // p["heads"]
        return 2 * d_model * d_model + 2 * d_model * p["kv_heads"] * head_dim  # Wq, Wo; Wk, Wv

    def flops_per_token(self, p, d_model, context):
        keys = mean_causal_keys(context, self.window(p))
        return 2 * self.param_count(p, d_model) + 4 * d_model * keys  # projections; QK^T and AV

    def state_bytes(self, p, d_model, context, dtype_bytes):
        cached = min(context, self.window(p) or context)
        return 2 * p["kv_heads"] * (d_model // p["heads"]) * cached * dtype_bytes


FAMILY = AttentionFamily()
