"""The delta rule (DeltaNet's state update): the public forms blocks call, each dispatching to its fastest form.

Shapes: q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H], states [B, H, K, V] (key space to value space,
read as o_t = S_t^T q_t); see `reference` for the definition. Outputs come back in the dtype of v, final
states in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import reference
from .reference import chunk_delta_rule_reference, recurrent_delta_rule


def chunk_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor | None]:
    """The delta rule over a whole sequence, chunkwise parallel (training and prefill): (o, final state or None).

    CUDA tensors go through the Triton kernels (`chunk`), everything else through the PyTorch chunked form."""
    if q.is_cuda:  # the kernel modules are imported only where their kernels run
        from .chunk import chunk_delta_rule_triton, supports

        if supports(q, v, chunk_size):
            o, s = chunk_delta_rule_triton(q, k, v, beta, scale, initial_state, output_final_state, chunk_size)
            return o.to(v.dtype), s
    return chunk_delta_rule_reference(q, k, v, beta, scale, initial_state, output_final_state, chunk_size)


def fused_recurrent_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The delta rule token by token (short sequences, decoding several tokens): (o, final state or None).

    CUDA tensors outside autograd go through the fused Triton kernel; with gradients, the PyTorch recurrence."""
    if q.is_cuda and not _needs_grad(q, k, v, beta, initial_state):
        from .fused_recurrent import fused_recurrent_delta_rule_triton

        return fused_recurrent_delta_rule_triton(q, k, v, beta, scale, initial_state, output_final_state)
    return recurrent_delta_rule(q, k, v, beta, scale, initial_state, output_final_state)


def delta_rule_step(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, state: Tensor, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """One token (decoding): q, k [B, H, K], v [B, H, V], beta [B, H], state [B, H, K, V] -> (o, new state)."""
    if q.is_cuda and not _needs_grad(q, k, v, beta, state):
        from .fused_recurrent import delta_rule_step_triton

        return delta_rule_step_triton(q, k, v, beta, state, scale)
    return reference.delta_rule_step(q, k, v, beta, state, scale)


def _needs_grad(*xs: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in xs)


__all__ = ["chunk_delta_rule", "fused_recurrent_delta_rule", "delta_rule_step"]
