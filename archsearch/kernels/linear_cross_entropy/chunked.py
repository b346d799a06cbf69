"""Cross-entropy of a linear head in chunks of rows, its gradients taken in the forward: no [N, V] float32 tensor
is kept for the backward (only the gradients, [N, d] and [V, d]), and at most one chunk's logits exist at a time."""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 25  # logits per chunk (128 MiB in float32): few chunks, so few launches, at any vocabulary


def _row_chunks(h: Tensor, vocab: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // vocab)
    return [slice(start, start + step) for start in range(0, h.shape[0], step)]


def _chunk_loss(h: Tensor, weight: Tensor, targets: Tensor, ignore_index: int) -> tuple[Tensor, Tensor, torch.dtype]:
    """The chunk's float32 logits, its summed loss, and the head's dtype (the ambient autocast's, as `F.linear`'s)."""
    head = h @ weight.t()
    logits = head.float()
    scored = targets != ignore_index
    picked = logits.gather(1, torch.where(scored, targets, 0)[:, None])[:, 0]
    return logits, torch.where(scored, logits.logsumexp(-1) - picked, 0.0).sum(), head.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, targets: Tensor, ignore_index: int) -> Tensor:
        count = (targets != ignore_index).sum()
        total = h.new_zeros((), dtype=torch.float32)
        grad_h = torch.empty(h.shape, device=h.device, dtype=torch.float32)
        grad_w = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32)
        for rows in _row_chunks(h, weight.shape[0]):
            t = targets[rows]
            logits, loss, head_dtype = _chunk_loss(h[rows], weight, t, ignore_index)
            total = total + loss
            # d loss / d logits = (softmax - one-hot) / count on scored rows, cast back to the head's dtype as
            # autograd would; the two products then run as the head's backward runs them
            scored = t != ignore_index
            g = logits.softmax(-1).scatter_add(1, torch.where(scored, t, 0)[:, None], logits.new_full((t.shape[0], 1), -1.0))
            g = (g * (scored / count)[:, None]).to(head_dtype)
            grad_h[rows] = (g @ weight).float()
            grad_w += (g.t() @ h[rows]).float()
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = h.dtype, weight.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        return (grad_h * grad).to(h_dtype), (grad_w * grad).to(w_dtype), None, None


def linear_cross_entropy_chunked(h: Tensor, weight: Tensor, targets: Tensor, ignore_index: int = -1) -> Tensor:
    """`linear_cross_entropy_reference`'s value and gradients, in chunks of rows."""
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, targets, ignore_index)
    total = h.new_zeros((), dtype=torch.float32)
    for rows in _row_chunks(h, weight.shape[0]):
        total = total + _chunk_loss(h[rows], weight, targets[rows], ignore_index)[1]
    return total / (targets != ignore_index).sum()
