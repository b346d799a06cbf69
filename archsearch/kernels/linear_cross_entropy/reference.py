"""The definition: cross-entropy of the logits h W^T, the softmax in float32, targets equal to ignore_index skipped."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def linear_cross_entropy_reference(h: Tensor, weight: Tensor, targets: Tensor, ignore_index: int = -1) -> Tensor:
    """Mean over the scored rows of -log softmax(h W^T)[target]: h [N, d], weight [V, d], targets [N]."""
    return F.cross_entropy(F.linear(h, weight).float(), targets, ignore_index=ignore_index)
