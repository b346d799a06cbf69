"""DeltaNet: linear attention whose state is updated by the delta rule, computed chunkwise (WY form)."""

from __future__ import annotations

from ._family import BlockFamily, Param, heads_divide


class DeltaNetFamily(BlockFamily):
    name, role, letter = "deltanet", "mixer", "D"
    doc = "DeltaNet: q/k/v/beta projections, short convolutions, L2-normalised q/k, delta rule, output norm and gate"
    params = {
        "heads": Param(int, 4, min=1, doc="heads; each keeps a head_dim x head_dim state"),
        "conv_size": Param(int, 4, min=0, max=16, doc="short causal convolution on q, k, v (0: none)"),
        "gate": Param(bool, True, doc="output gate: RMSNorm(o) * SiLU(W_g x)"),
    }

    def violations(self, p, d_model):
        return heads_divide(d_model, p["heads"])

    def param_count(self, p, d_model):
        d, head_dim = d_model, d_model // p["heads"]
        return (
            4 * d * d  # Wq, Wk, Wv, Wo
            + d * p["heads"]  # W_beta
            + 3 * d * p["conv_size"]  # depthwise short convolutions on q, k, v
            + (d * d if p["gate"] else 0)  # W_g
            + head_dim  # output RMSNorm, shared by the heads
        )

    def flops_per_token(self, p, d_model, context):
        d, head_dim = d_model, d_model // p["heads"]
        matmul = 4 * d * d + d * p["heads"] + (d * d if p["gate"] else 0)
        # per head and token: S k, the rank-1 update and S^T q, each head_dim^2 multiply-adds
        return 2 * matmul + 2 * 3 * d * p["conv_size"] + 6 * d * head_dim

    def state_bytes(self, p, d_model, context, dtype_bytes):
        head_dim = d_model // p["heads"]
        conv_cache = 3 * d_model * max(p["conv_size"] - 1, 0)
        return (p["heads"] * head_dim * head_dim + conv_cache) * dtype_bytes


FAMILY = DeltaNetFamily()
