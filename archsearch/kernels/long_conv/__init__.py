"""Causal long convolution (H3's SSM kernels, Hyena's implicit filters): the public forms blocks call.

Shapes: u [..., C, T] (time last, leading dimensions are batch), h [C, T'] with any T' (taps beyond T are
ignored, missing taps are zero), skip [C]; see `reference` for the definition. Outputs come back in the dtype
of u; the arithmetic is float32.
"""

from __future__ import annotations

from torch import Tensor

from .reference import long_conv_direct, long_conv_fft, long_conv_step


def long_conv(u: Tensor, h: Tensor, skip: Tensor | None = None) -> Tensor:
    """y = h * u (causal, per channel) + skip u over a whole sequence (training and prefill)."""
    # The fused GPU kernel (FFT or blocked) plugs in here for CUDA tensors; until then every device runs the FFT form.
    return long_conv_fft(u, h, skip)


__all__ = ["long_conv", "long_conv_step", "long_conv_direct"]
