"""Causal long convolution in plain PyTorch: the direct sum that defines it, its FFT form, and one decoding step.

Shapes: u [..., C, T] (time last; leading dimensions are batch), h [C, T'] one filter per channel, skip [C].

    y[..., c, t] = sum_{s=0}^{t} h[c, s] u[..., c, t - s] + skip[c] u[..., c, t]

Filter taps at lags >= T are never reached and are ignored; a filter shorter than T has zeros beyond its end.
Every form computes in float32 and returns the dtype of u.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def long_conv_direct(u: Tensor, h: Tensor, skip: Tensor | None = None) -> Tensor:
    """The causal convolution as the sum over lags (O(T^2)): the definition of the op."""
    t = u.shape[-1]
    uf, hf = u.float(), h.float()
    y = torch.zeros_like(uf)
    for s in range(min(t, hf.shape[-1])):
        y = y + hf[:, s, None] * F.pad(uf[..., : t - s], (s, 0))  # u delayed by s steps
    if skip is not None:
        y = y + skip.float()[:, None] * uf
    return y.to(u.dtype)


def long_conv_fft(u: Tensor, h: Tensor, skip: Tensor | None = None) -> Tensor:
    """The causal convolution through the FFT at length 2T, where the circular wrap-around cannot reach [0, T)."""
    t = u.shape[-1]
    n = 2 * t
    uf = u.float()
    h_f = torch.fft.rfft(h[:, :t].float(), n=n)
    y = torch.fft.irfft(torch.fft.rfft(uf, n=n) * h_f, n=n)[..., :t]
    if skip is not None:
        y = y + skip.float()[:, None] * uf
    return y.to(u.dtype)


def long_conv_step(history: Tensor, h: Tensor, skip: Tensor | None = None) -> Tensor:
    """The convolution at the last position of `history` [..., C, t] only: y [..., C] (decoding one token)."""
    t = history.shape[-1]
    taps = h[:, :t].float().flip(-1)  # taps[c, i] = h[c, t - 1 - i] meets history[..., c, i]
    if taps.shape[-1] < t:
        taps = F.pad(taps, (t - taps.shape[-1], 0))
    last = history[..., -1].float()
    y = (history.float() * taps).sum(-1)
    if skip is not None:
        y = y + skip.float() * last
    return y.to(history.dtype)
