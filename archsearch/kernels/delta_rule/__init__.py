"""The delta rule (DeltaNet's state update): the public forms blocks call, each dispatching to its fastest form.

Shapes: q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H], states [B, H, K, V] (key space to value space,
read as o_t = S_t^T q_t); see `reference` for the definition. Outputs come back in the dtype of v, final
states in float32.
"""

from __future__ import annotations

from torch import Tensor

from .reference import chunk_delta_rule_reference, delta_rule_step, recurrent_delta_rule


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
    """The delta rule over a whole sequence, chunkwise parallel (training and prefill): (o, final state or None)."""
    # The Triton kernel (chunk.py) plugs in here for CUDA tensors; until then every device runs the reference.
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
    """The delta rule token by token (short sequences, decoding several tokens): (o, final state or None)."""
    # A fused recurrent kernel plugs in here for CUDA tensors; until then every device runs the reference.
    return recurrent_delta_rule(q, k, v, beta, scale, initial_state, output_final_state)


__all__ = ["chunk_delta_rule", "fused_recurrent_delta_rule", "delta_rule_step"]
