"""H3: a shift SSM on K, a diagonal (S4D) SSM on the product K*V, multiplicative gates with Q and V."""

from __future__ import annotations

from ._family import BlockFamily, Param, fft_conv_flops


class H3Family(BlockFamily):
    name, role, letter = "h3", "mixer", "H"
    doc = "H3: shift SSM on K, diagonal SSM on K*V (FFT long convolution), gating with Q"
    params = {
        "head_dim": Param(int, 1, min=1, doc="1: the original H3; >1: per-head outer products K V^T"),
        "state_size": Param(int, 64, min=2, doc="SSM state size N (shift taps and diagonal modes)"),
    }

    def violations(self, p, d_model):
        out = []
        if d_model % p["head_dim"]:
            out.append(("head_dim", f"{p['head_dim']} must divide d_model {d_model}"))
        if p["state_size"] % 2:
            out.append(("state_size", f"{p['state_size']} must be even (complex modes come in conjugate pairs)"))
        return out

    def param_count(self, p, d_model):
        d, n = d_model, p["state_size"]
        heads = d // p["head_dim"]
        # Wq, Wk, Wv, Wo; shift kernel and its skip D; per head: log_dt, D, and per mode log(-Re A), Im A, C (complex)
        return 4 * d * d + d * n + d + heads * (2 + 2 * n)

    def flops_per_token(self, p, d_model, context):
        d, n, dh = d_model, p["state_size"], p["head_dim"]
        long_channels = d * dh  # the diagonal SSM runs on every entry of the per-head K V^T
        return 2 * 4 * d * d + 2 * d * n + long_channels * fft_conv_flops(context) + 2 * 2 * long_channels

    def state_bytes(self, p, d_model, context, dtype_bytes):
        d, n = d_model, p["state_size"]
        return (d * n + d * p["head_dim"] * n) * dtype_bytes  # shift register; N/2 complex modes per channel


FAMILY = H3Family()
