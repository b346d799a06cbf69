"""Causal softmax attention, global or over a sliding window, with grouped-query heads: `attention`.

Dispatch: flash-attn's `flash_attn_func` when the package imports and the tensors are fp16/bf16 on CUDA; else, for
a sliding window over several queries on CUDA, our Triton kernel (`sliding_window`), which visits only the key
blocks inside the window and needs no compilation per sequence length, as FlexAttention would; PyTorch's
`scaled_dot_product_attention` otherwise (its own backend choice for global causal attention, faster than its flash
backend on an H100; a cached band mask for windows on the CPU). `reference.attention_reference` defines the op.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from .reference import attention_reference, visible

try:
    from flash_attn import flash_attn_func
except ImportError:
    flash_attn_func = None

_HALF = (torch.float16, torch.bfloat16)
_SDPA_HAS_GQA = torch.torch_version.TorchVersion(torch.__version__) >= (2, 5)
# SDPA's backends but cuDNN, for every call but plain causal self-attention: compiled by Inductor on an H200 (torch
# 2.11, cuDNN 9.19), its backward gave the block-recurrent cell's cross-attention and masked calls wrong gradients
# (0.80 relative error against eager) or NaN, where the memory-efficient backend matched eager to 3e-3
# (benchmarks/RESULTS.md, "cuDNN attention"); with is_causal and no mask it matches eager, and it is the fastest.
_NOT_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention(
    q: Tensor, k: Tensor, v: Tensor, window: int | None = None, scale: float | None = None, causal: bool = True
) -> Tensor:
    """Attention of q [B, T_q, H, D] over k, v [B, T_k, H_kv, D] (H_kv divides H, T_q <= T_k) -> [B, T_q, H, D].

    Causal: query i sits at position T_k - T_q + i and sees the keys up to it, only the `window` most recent ones
    (itself included) when `window` is given. `causal=False` (cross-attention) sees every key. `scale` defaults
    to D^-1/2.
    """
    if q.shape[2] % k.shape[2] or k.shape != v.shape or q.shape[1] > k.shape[1] and causal:
        raise ValueError(f"attention: incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if window is not None:
        if not causal:
            raise ValueError("attention: a window needs causal=True")
        # keys older than the first query's window are never seen: dropping them makes decoding with a cache of
        # exactly `window` keys mask-free, and spares the kernels the work
        first = max(k.shape[1] - q.shape[1] - window + 1, 0)
        if first:
            k, v = k[:, first:], v[:, first:]
        if window >= k.shape[1]:
            window = None
    if flash_attn_func is not None and q.is_cuda and q.dtype in _HALF and q.shape[-1] <= 256:
        # (-1, -1) is flash-attn's "no window"; a right bound of 0 would make cross-attention causal
        window_size = (-1, -1) if window is None else (window - 1, 0)
        return flash_attn_func(q, k, v, softmax_scale=scale, causal=causal, window_size=window_size)
    if window is not None and q.is_cuda and q.shape[1] > 1 and q.dtype in _HALF and _tiled_head_dim(q):
        from .sliding_window import sliding_window_attention  # Triton is a Linux-only dependency

        return sliding_window_attention(q, k, v, window, scale)
    return _sdpa(q, k, v, window, scale, causal)


def _tiled_head_dim(q: Tensor) -> bool:
    d = q.shape[-1]
    return 16 <= d <= 256 and d & (d - 1) == 0


def _sdpa(q: Tensor, k: Tensor, v: Tensor, window: int | None, scale: float | None, causal: bool) -> Tensor:
    t_q, t_k = q.shape[1], k.shape[1]
    mask, is_causal = None, False
    if causal and t_q > 1:  # a single (last) query sees every key left after the window cut
        if t_q == t_k and window is None:
            is_causal = True
        else:  # a compiled graph builds the mask in place of the cache (dynamo would trace through it anyway)
            mask = visible(t_q, t_k, window, q.device) if torch.compiler.is_compiling() else _mask(t_q, t_k, window, q.device)
    extra = {}
    if k.shape[2] != q.shape[2]:
        # SDPA's GQA runs in its flash backend only, which takes no mask and (on CUDA) only half precision;
        # elsewhere it falls back to the math backend, slower than repeating the heads
        if _SDPA_HAS_GQA and mask is None and (not q.is_cuda or q.dtype in _HALF):
            extra["enable_gqa"] = True
        else:
            group = q.shape[2] // k.shape[2]
            k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    with contextlib.nullcontext() if is_causal else sdpa_kernel(_NOT_CUDNN):
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            is_causal=is_causal,
            scale=scale,
            **extra,
        )
    return out.transpose(1, 2)


@functools.lru_cache(maxsize=16)
def _mask(t_q: int, t_k: int, window: int | None, device: torch.device) -> Tensor:
    # built outside inference mode: a cached inference tensor could not be saved for a later backward
    with torch.inference_mode(False):
        return visible(t_q, t_k, window, device)


__all__ = ["attention", "attention_reference", "visible"]
