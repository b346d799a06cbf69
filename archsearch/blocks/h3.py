"""H3: a shift SSM on K, a diagonal (S4D) SSM on the product K*V, multiplicative gates with Q and V."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..kernels.long_conv import long_conv
from ._family import BlockFamily, Param, fft_conv_flops
from ._layers import Block


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
        # shift register of the last N keys; N/2 complex64 modes per long-convolution channel
        return d * n * dtype_bytes + d * p["head_dim"] * (n // 2) * 8

    def build(self, p, d_model):
        return H3(d_model, p["head_dim"], p["state_size"])


FAMILY = H3Family()


class ShiftSSM(nn.Module):
    """H3's shift SSM: x_t = shift(x_{t-1}) + e_0 u_t, y_t = C x_t + D u_t, i.e. a causal convolution whose
    `taps` learned taps (C, lag j at column j) plus a skip D act per channel. Decoding keeps the shift register."""

    def __init__(self, channels: int, taps: int) -> None:
        super().__init__()
        # std taps^-0.5 keeps the output's variance at the input's (safari draws std 1, which grows with N)
        self.kernel = nn.Parameter(torch.randn(channels, taps) * taps**-0.5)
        self.D = nn.Parameter(torch.randn(channels))

    def forward(self, u: Tensor) -> Tensor:  # [B, C, T]
        return long_conv(u, self.kernel, self.D)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        return torch.zeros(batch, *self.kernel.shape, device=device, dtype=dtype)

    def step(self, u: Tensor, register: Tensor) -> tuple[Tensor, Tensor]:  # u [B, C], register [B, C, N], newest first
        register = torch.cat((u[..., None], register[..., :-1]), dim=-1)
        return (register * self.kernel).sum(-1) + self.D * u, register


class DiagonalSSM(nn.Module):
    """S4D with zero-order hold (Gu et al. 2022): per channel, state_size/2 complex modes with B = 1, skip D.

    Continuous A_n = -exp(log_A_real_n) + i A_imag_n, step dt = exp(log_dt); discretised dA = exp(dt A),
    dB = (exp(dt A) - 1) / A. The kernel K[l] = 2 Re(sum_n C_n dB_n dA_n^l) is what the recurrence
    s_t = dA s_{t-1} + C dB u_t, y_t = 2 Re(sum_n s_t) + D u_t computes (s = C x, the ZOH state x scaled by C);
    the conjugate modes are the factor 2. Parameters are per channel (an H3 head); inputs [..., H, T] broadcast
    over the leading dimensions.

    The kernel is built in real arithmetic, dA^l = exp(l Re(dt A)) (cos + i sin)(l Im(dt A)), so that Inductor
    fuses it into one reduction: it generates no code for complex tensors.
    """

    def __init__(self, channels: int, state_size: int, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        modes = state_size // 2
        log_dt = torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        self.log_A_real = nn.Parameter(torch.full((channels, modes), math.log(0.5)))  # S4D-Lin: Re A = -1/2
        self.A_imag = nn.Parameter(math.pi * torch.arange(modes, dtype=torch.float32).repeat(channels, 1))  # pi n
        self.C = nn.Parameter(torch.view_as_real(torch.randn(channels, modes, dtype=torch.cfloat)))
        self.D = nn.Parameter(torch.randn(channels))

    def discretise(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(Re dt A, Im dt A, Re C dB, Im C dB), each real [H, N/2] float32; dA = exp(dt A)."""
        # float32 whatever the module's dtype: the kernel's powers lose precision below it
        a_re, a_im = -torch.exp(self.log_A_real.float()), self.A_imag.float()
        dt = torch.exp(self.log_dt.float())[:, None]
        x, y = dt * a_re, dt * a_im
        # exp(dt A) - 1 with expm1's precision for small dt A: e^x cos y - 1 = expm1(x) cos y - 2 sin^2(y / 2)
        num_re = torch.expm1(x) * torch.cos(y) - 2 * torch.sin(y / 2) ** 2
        num_im = torch.exp(x) * torch.sin(y)
        norm = a_re**2 + a_im**2
        b_re, b_im = (num_re * a_re + num_im * a_im) / norm, (num_im * a_re - num_re * a_im) / norm
        c_re, c_im = self.C.float().unbind(-1)
        return x, y, c_re * b_re - c_im * b_im, c_re * b_im + c_im * b_re

    def kernel(self, length: int) -> Tensor:
        """K [H, length] in float32."""
        x, y, w_re, w_im = (t[..., None] for t in self.discretise())
        lags = torch.arange(length, device=x.device, dtype=torch.float32)
        angle = y * lags  # Re(C dB dA^l) = |dA|^l (Re(C dB) cos(l Im dt A) - Im(C dB) sin(l Im dt A))
        return 2 * (torch.exp(x * lags) * (w_re * torch.cos(angle) - w_im * torch.sin(angle))).sum(1)

    def forward(self, u: Tensor) -> Tensor:  # [..., H, T]
        return long_conv(u, self.kernel(u.shape[-1]), self.D)

    def init_state(self, batch_shape: tuple[int, ...], device: torch.device) -> Tensor:
        """The complex modes, [*batch_shape, H, N/2]; always complex64 whatever the activations' dtype."""
        return torch.zeros(*batch_shape, *self.log_A_real.shape, device=device, dtype=torch.cfloat)

    def step(self, u: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:  # u [..., H]
        x, y, w_re, w_im = self.discretise()
        uf = u.float()
        state = torch.polar(torch.exp(x), y) * state + torch.complex(w_re, w_im) * uf[..., None]
        y_t = 2 * state.sum(-1).real + self.D.float() * uf
        return y_t.to(u.dtype), state


class H3(Block):
    """Hungry Hungry Hippos (Fu et al. 2023), as safari's `H3`: q, k, v projections; a shift SSM on k; per head
    the product k v^T (k * v when head_dim is 1) through a diagonal SSM shared by the head's entries; contracted
    with q; W_o. Channels are grouped head-major ((head, head_dim)).

    Decode state: (shift register [B, d, N] of the last N keys, S4D modes [B, hd, hd, H, N/2] complex).
    """

    residual_params = ("out_proj.weight",)

    def __init__(self, d_model: int, head_dim: int, state_size: int) -> None:
        super().__init__()
        self.d_model, self.head_dim, self.heads = d_model, head_dim, d_model // head_dim
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.normal_(proj.weight, std=0.02)
        self.shift = ShiftSSM(d_model, state_size)
        self.ssm = DiagonalSSM(self.heads, state_size)

    def _split(self, x: Tensor) -> Tensor:
        """[B, d, ...] -> [B, head_dim, H, ...]: the layout the diagonal SSM broadcasts over."""
        return x.unflatten(1, (self.heads, self.head_dim)).transpose(1, 2)

    def _merge(self, y: Tensor) -> Tensor:
        return y.transpose(1, 2).flatten(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = (proj(x).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))  # [B, d, T]
        k = self.shift(k)
        q, k, v = self._split(q), self._split(k), self._split(v)  # [B, hd, H, T]
        kv = k[:, :, None] * v[:, None]  # [B, hd (k), hd (v), H, T]
        y = (q[:, :, None] * self.ssm(kv)).sum(1)  # contract the key index with q
        return self.out_proj(self._merge(y).transpose(1, 2))

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        return (
            self.shift.init_state(batch, device, dtype),
            self.ssm.init_state((batch, self.head_dim, self.head_dim), device),
        )

    def step(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        register, modes = state
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # [B, d]
        k, register = self.shift.step(k, register)
        q, k, v = self._split(q), self._split(k), self._split(v)  # [B, hd, H]
        s, modes = self.ssm.step(k[:, :, None] * v[:, None], modes)
        y = (q[:, :, None] * s).sum(1)
        return self.out_proj(self._merge(y)), (register, modes)
