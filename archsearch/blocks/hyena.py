"""Hyena: projections with short convolutions, implicit long filters and data-controlled gating."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..kernels.long_conv import long_conv, long_conv_step
from ._family import BlockFamily, Param, fft_conv_flops
from ._layers import Block, ShortConv


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
        # Linear+bias layers; one Sin frequency vector, since safari appends the same Sin module after every Linear
        ffn = (p["pos_dim"] + 1) * w + (p["filter_depth"] - 1) * (w + 1) * w + w + w * filters
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

    def build(self, p, d_model):
        return Hyena(d_model, p["order"], p["filter_width"], p["filter_depth"], p["pos_dim"], p["short_conv"])


FAMILY = HyenaFamily()

# Filter positions are measured against a fixed length so that a tap's value depends on its lag alone (decoding
# and longer sequences see the same filter); below it the encoding is safari's for l_max = this length.
FILTER_REFERENCE_LENGTH = 2048


class HyenaFilter(nn.Module):
    """Safari's implicit long filter: positional encoding -> FFN (Linear + Sin, one shared learned frequency
    vector) -> Linear to one filter per channel, times an exponential-decay window (ExponentialModulation).

    The encoding of lag l is z = (t, cos(f_b w), -sin(f_b w)) with t = l / (L - 1), w = 2 pi l / L, L the
    reference length and f_b = linspace(1e-4, bands - 1, bands); the window is exp(-t |delta_c|) with delta
    spread from log(1e-2)/1.5 to log(1e-2)/0.3 over the channels (fastest channel down to 1e-2 at t = 0.3).
    Only the FFN is trained; frequencies and decay rates are buffers.
    """

    def __init__(
        self, channels: int, width: int, depth: int, pos_dim: int, reference_length: int = FILTER_REFERENCE_LENGTH
    ) -> None:
        super().__init__()
        self.reference_length = reference_length
        bands = (pos_dim - 1) // 2
        self.register_buffer("band_freq", torch.linspace(1e-4, bands - 1, bands), persistent=False)
        target, fast, slow = 1e-2, 0.3, 1.5
        deltas = torch.linspace(math.log(target) / slow, math.log(target) / fast, channels)
        self.register_buffer("deltas", deltas, persistent=False)
        self.linears = nn.ModuleList([nn.Linear(pos_dim, width)] + [nn.Linear(width, width) for _ in range(depth - 1)])
        self.freq = nn.Parameter(torch.ones(width))  # Sin's frequency, w = 1 as safari's HyenaFilter
        self.out = nn.Linear(width, channels, bias=False)

    def encoding(self, length: int) -> tuple[Tensor, Tensor]:
        """(z [length, pos_dim], t [length, 1]) for lags 0 .. length - 1."""
        lags = torch.arange(length, device=self.deltas.device, dtype=torch.float32)[:, None]
        t = lags / (self.reference_length - 1)
        w = 2 * math.pi * lags / self.reference_length
        return torch.cat((t, torch.cos(self.band_freq * w), -torch.sin(self.band_freq * w)), dim=-1), t

    def window(self, t: Tensor) -> Tensor:
        """The exponential-decay window [length, channels]."""
        return torch.exp(-t * self.deltas.abs())

    def forward(self, length: int) -> Tensor:
        """The filters [channels, length]: tap l of channel c at [c, l]."""
        z, t = self.encoding(length)
        z = z.to(self.out.weight.dtype)
        for linear in self.linears:
            z = torch.sin(self.freq * linear(z))
        return (self.out(z) * self.window(t)).T


class Hyena(Block):
    """The Hyena operator (Poli et al. 2023), as safari's `HyenaOperator` with one head: in_proj to order+1
    streams x_0 .. x_{order-1}, v; a short causal convolution over all of them; then for each long filter i (in
    safari's order, gates x_{order-1} down to x_1) v <- h_i * (v x_i) + bias_i (v x_i); y = out_proj(v x_0).

    Filter channels are laid out (channel, filter) as safari's '(v o)'. Decode state: (short-convolution cache
    [B, (order+1) d, short_conv - 1], the inputs of every long convolution so far [B, order - 1, d, t]).
    """

    residual_params = ("out_proj.weight",)

    def __init__(
        self,
        d_model: int,
        order: int,
        filter_width: int,
        filter_depth: int,
        pos_dim: int,
        short_conv: int,
        reference_length: int = FILTER_REFERENCE_LENGTH,
    ) -> None:
        super().__init__()
        self.d_model, self.order = d_model, order
        self.in_proj = nn.Linear(d_model, (order + 1) * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        for proj in (self.in_proj, self.out_proj):
            nn.init.normal_(proj.weight, std=0.02)
        self.short_conv = ShortConv((order + 1) * d_model, short_conv)
        self.filter = HyenaFilter((order - 1) * d_model, filter_width, filter_depth, pos_dim, reference_length)
        self.bias = nn.Parameter(torch.randn((order - 1) * d_model))

    def filters(self, length: int) -> tuple[Tensor, Tensor]:
        """(h [order - 1, d, length], bias [order - 1, d]), indexed in the order the recurrence applies them."""
        h = self.filter(length).unflatten(0, (self.d_model, self.order - 1)).transpose(0, 1)
        return h, self.bias.unflatten(0, (self.d_model, self.order - 1)).T

    def forward(self, x: Tensor) -> Tensor:
        u = self.short_conv(self.in_proj(x)).transpose(1, 2)  # [B, (order+1) d, T]
        *gates, v = u.split(self.d_model, dim=1)
        h, bias = self.filters(x.shape[1])
        for i, gate in enumerate(reversed(gates[1:])):
            v = long_conv(v * gate, h[i], bias[i])
        return self.out_proj((v * gates[0]).transpose(1, 2))

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        history = torch.zeros(batch, self.order - 1, self.d_model, 0, device=device, dtype=dtype)
        return self.short_conv.init_state(batch, device, dtype), history

    def step(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        cache, history = state
        u, cache = self.short_conv.step(self.in_proj(x), cache)  # [B, (order+1) d]
        *gates, v = u.split(self.d_model, dim=1)
        h, bias = self.filters(history.shape[-1] + 1)  # re-evaluated each step: filters are weights, not state
        inputs = []
        for i, gate in enumerate(reversed(gates[1:])):
            v = v * gate
            inputs.append(v)
            v = long_conv_step(torch.cat((history[:, i], v[..., None]), dim=-1), h[i], bias[i])
        history = torch.cat((history, torch.stack(inputs, dim=1)[..., None]), dim=-1)
        return self.out_proj(v * gates[0]), (cache, history)
