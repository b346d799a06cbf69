"""Cross-entropy of a linear head, h W^T then softmax: `linear_cross_entropy`.

h [N, d], weight [V, d], targets [N]; see `reference` for the definition. Every device takes the chunked form
(plain PyTorch, traced whole by torch.compile): the float32 logits of the reference, [N, V], are never kept for the
backward, which a large vocabulary makes the largest tensor of a step.
"""

from __future__ import annotations

from .chunked import linear_cross_entropy_chunked as linear_cross_entropy
from .reference import linear_cross_entropy_reference

__all__ = ["linear_cross_entropy", "linear_cross_entropy_reference"]
