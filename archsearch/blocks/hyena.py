"""Hyena: projections with short convolutions, implicit long filters and data-controlled gating."""

from __future__ import annotations

from ._family import BlockFamily, Param, fft_conv_flops


class HyenaFamily(BlockFamily):
    name, role, letter = "hyena", "mixer", "Y"
    doc = "Hyena operator: order+1 projections, order-1 implicit long filters (FFT), gating"
    params = {
        "order": Param(int, 2, min=2, max=8, doc="gates in the recurrence; order-1 long convolutions"),
        "filter_width": Param(int, 64, min=1, doc="width of the implicit filter's FFN"),
        "filter_depth": Param(int, 2, min=1, max=8, doc="Linear+Sin layers of the filter FFN"),
        "pos_dim": Param(int, 3, min=3, doc="positional encoding size (t and (pos_dim-1)/2 sin/cos bands)"),
        "short_conv": Param(int, 3, min=1, max=16, doc="short causal convolution on the projections"),
    }

    def violations(self, p, d_model):
        if p["pos_dim"] % 2 == 0:
            return [("pos_dim", f"{p['pos_dim']} must be odd (t plus sin/cos pairs)")]
        return []

    def param_count(self, p, d_model):
        d, n, w = d_model, p["order"], p["filter_width"]
        filters = (n - 1) * d
        ffn = p["pos_dim"] * w + 2 * w + (p["filter_depth"] - 1) * (w * w + 2 * w) + w * filters  # Linear+bias, Sin freq
        # in_proj; short conv; filter FFN; per-filter skip bias; out_proj
        return (n + 1) * d * d + (n + 1) * d * p["short_conv"] + ffn + filters + d * d

    def flops_per_token(self, p, d_model, context):
        d, n, w = d_model, p["order"], p["filter_width"]
        filters = (n - 1) * d
        ffn = p["pos_dim"] * w + (p["filter_depth"] - 1) * w * w + w * filters  # once per position of the filter
        return 2 * ((n + 1) * d * d + d * d) + 2 * (n + 1) * d * p["short_conv"] + 2 * ffn + filters * fft_conv_flops(context)

    def state_bytes(self, p, d_model, context, dtype_bytes):
        d, n = d_model, p["order"]
        # implicit filters have no compact recurrence: decoding keeps each long convolution's inputs
        return ((n - 1) * d * context + (n + 1) * d * (p["short_conv"] - 1)) * dtype_bytes


FAMILY = HyenaFamily()
