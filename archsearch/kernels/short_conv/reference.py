"""Short causal depthwise convolution in plain PyTorch: the definition the fast forms are tested against.

x [B, T, C] (channels last, as the projections produce them), weight [C, K]:

    y[b, t, c] = sum_{j=0}^{K-1} weight[c, j] x[b, t - (K - 1) + j, c]      (x is zero before t = 0)

so weight[:, -1] meets the current token (F.conv1d's cross-correlation over a left-padded input).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def short_conv_reference(x: Tensor, weight: Tensor) -> Tensor:
    """The depthwise causal convolution through F.conv1d: [B, T, C] -> [B, T, C], in x's dtype."""
    k = weight.shape[-1]
    y = F.conv1d(F.pad(x.transpose(1, 2), (k - 1, 0)), weight[:, None, :].to(x.dtype), groups=x.shape[-1])
    return y.transpose(1, 2)
