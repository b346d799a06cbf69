"""Causal long convolution (H3's SSM kernels, Hyena's implicit filters): the public forms blocks call.

Shapes: u [..., C, T] (time last, leading dimensions are batch), h [C, T'] with any T' (taps beyond T are
ignored, missing taps are zero), skip [C]; see `reference` for the definition. Outputs come back in the dtype
of u; the arithmetic is float32 outside the transforms.

Dispatch on CUDA: `monarch` (one fused Triton kernel, DFT products in fp16 on tensor cores) up to T = 2048, where
its tiles fit the registers; `fft` (cuFFT with fused Triton passes) beyond: its transforms in fp16 for T in
(8192, 32768], in fp32 elsewhere. That split is measured (H100, benchmarks/long_conv.py, 2026-11-23): fp32 won at
T4096 (1.07 against 1.12 ms fwd+bwd) and T8192 (1.20 against 2.05 ms: cuFFT's 16384-point half-precision transform is
slow), fp16 at T16384 (1.44 against 1.56 ms); past T = 32768 fp16's range ends. Both stay within 1e-2 relative error
of the float32 reference. Elsewhere the FFT reference runs.
"""

from __future__ import annotations

from torch import Tensor

from .reference import long_conv_direct, long_conv_fft, long_conv_step

MONARCH_MAX_T = 2048  # its 4096-point tiles; at 8192 points the kernel spills registers and loses to cuFFT
HALF_FFT_T = (8192, 32768)  # fp16 transforms for T in (low, high]: every unnormalised value stays under fp16's max


def long_conv(u: Tensor, h: Tensor, skip: Tensor | None = None) -> Tensor:
    """y = h * u (causal, per channel) + skip u over a whole sequence (training and prefill)."""
    if u.is_cuda:
        from . import fft, monarch  # Triton is a Linux-only dependency: imported where CUDA tensors arrive

        t = u.shape[-1]
        if t <= MONARCH_MAX_T:
            return monarch.long_conv_monarch(u, h, skip)
        return fft.long_conv_cufft(u, h, skip, half=HALF_FFT_T[0] < t <= HALF_FFT_T[1])
    return long_conv_fft(u, h, skip)


__all__ = ["long_conv", "long_conv_step", "long_conv_direct"]
