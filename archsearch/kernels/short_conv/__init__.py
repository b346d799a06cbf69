"""Short causal depthwise convolution (the short filters of Hyena, DeltaNet, H3-style layers): `short_conv`.

x [B, T, C] channels last, weight [C, K]; see `reference` for the definition. Dispatch on CUDA: the
`causal-conv1d` package when it imports and supports K (2 to 4), else our Triton kernel (K <= 16); the
F.conv1d reference elsewhere.
"""

from __future__ import annotations

from torch import Tensor

from .reference import short_conv_reference

try:
    from causal_conv1d import causal_conv1d_fn
except ImportError:
    causal_conv1d_fn = None


def short_conv(x: Tensor, weight: Tensor) -> Tensor:
    """y[b, t, c] = sum_j weight[c, j] x[b, t - (K - 1) + j, c], causal, per channel: [B, T, C] -> [B, T, C]."""
    k = weight.shape[-1]
    if x.is_cuda and causal_conv1d_fn is not None and 2 <= k <= 4:
        # causal-conv1d reads the channels-last layout as [B, C, T] with unit channel stride
        return causal_conv1d_fn(x.transpose(1, 2), weight.to(x.dtype)).transpose(1, 2)
    if x.is_cuda:
        # Triton is a Linux-only dependency: imported where CUDA tensors arrive
        from .fused import MAX_K, short_conv_triton

        if k <= MAX_K:
            return short_conv_triton(x, weight)
    return short_conv_reference(x, weight)


__all__ = ["short_conv", "short_conv_reference"]
