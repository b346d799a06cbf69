"""Pieces several block families share: the block interface, RMSNorm, rotary embeddings, short causal convolutions."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..kernels.short_conv import short_conv


class Block(nn.Module):
    """What the model needs from every block module.

    forward(x [B, T, d]) -> [B, T, d], causal. Decoding: `init_state(batch, device, dtype)` gives the state
    before the first token and `step(x_t [B, d], state) -> (y_t [B, d], state)` advances one token; stepping
    through a sequence equals `forward` on it. Blocks with training losses of their own (mixture of experts)
    set `self.aux_loss` (a scalar tensor) during forward; the model adds it to the loss.
    """

    aux_loss: Tensor | None = None
    # parameters (dotted names) that write into the residual stream: the model scales their initial values by
    # 1 / sqrt(2 * n_layers) so the residual stream's variance does not grow with depth (GPT-2's scheme)
    residual_params: tuple[str, ...] = ()

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> Any:
        return None

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError(f"{type(self).__name__} has no decode step")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


@torch.library.custom_op("archsearch::rotary_tables", mutates_args=())
def rotary_tables(positions: Tensor, half: int, base: float) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotary angles position * base^(-i/half), each [T, half] in float32.

    An op of its own so that Inductor cannot fuse the angles into the rotation: fused, it computed the pow, cos and
    sin once per element of q and k (B x H x 2 times as often as the table has entries), 2.3 ms of a 14.6 ms step
    at T 1024, d_model 512 on an H200 (benchmarks/step_time.py). Nothing is cached across calls: a table kept alive
    from inside a CUDA graph's memory pool would stop the graphs recording (see kernels/long_conv/monarch.py)."""
    inv_freq = base ** (-torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * inv_freq
    return angles.cos(), angles.sin()


@rotary_tables.register_fake
def _(positions: Tensor, half: int, base: float) -> tuple[Tensor, Tensor]:
    table = positions.new_empty(positions.shape[0], half, dtype=torch.float32)
    return table, torch.empty_like(table)


def rotary(x: Tensor, positions: Tensor, base: float) -> Tensor:
    """Rotate pairs (i, i + head_dim/2) of x [..., T, H, head_dim] by angle position * base^(-2i/head_dim)."""
    cos, sin = rotary_tables(positions, x.shape[-1] // 2, float(base))
    cos, sin = cos[:, None, :], sin[:, None, :]  # broadcast over heads
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)


class ShortConv(nn.Module):
    """Depthwise causal convolution over time (no bias), with a cache of the last kernel_size - 1 inputs for decoding."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        nn.init.normal_(self.weight, std=kernel_size**-0.5)

    def forward(self, x: Tensor) -> Tensor:  # [B, T, C]
        return short_conv(x, self.weight)

    def init_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        return torch.zeros(batch, self.weight.shape[0], self.kernel_size - 1, device=device, dtype=dtype)

    def step(self, x: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:  # x [B, C]
        window = torch.cat((cache, x[:, :, None]), dim=-1)  # [B, C, K]
        return (window * self.weight).sum(-1), window[:, :, 1:]
