"""SwiGLU's elementwise core on the packed projection, silu(h[..., :n]) * h[..., n:], as one Triton kernel each way.

The gated MLP's two input projections run as one GEMM into h = x [w1 | w3]; the kernel reads both halves in place
(no split copies) and writes y [..., n]. Unfused, PyTorch runs silu, then the product (forward), and three kernels
backward; fused, the forward reads h once and writes y, and the backward reads dy and h once and writes dh (the
packed gradient the GEMM's backward takes), recomputing the sigmoid.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK = 2048


@triton.jit
def _swiglu_fwd_kernel(h_ptr, y_ptr, numel, n, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = i < numel
    a_at = (i // n) * (2 * n) + i % n  # row r, column c of y read h[r, c] and h[r, n + c]
    a = tl.load(h_ptr + a_at, mask=inside, other=0.0).to(tl.float32)
    b = tl.load(h_ptr + a_at + n, mask=inside, other=0.0).to(tl.float32)
    tl.store(y_ptr + i, (a * tl.sigmoid(a) * b).to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _swiglu_bwd_kernel(h_ptr, dy_ptr, dh_ptr, numel, n, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = i < numel
    a_at = (i // n) * (2 * n) + i % n
    a = tl.load(h_ptr + a_at, mask=inside, other=0.0).to(tl.float32)
    b = tl.load(h_ptr + a_at + n, mask=inside, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + i, mask=inside, other=0.0).to(tl.float32)
    s = tl.sigmoid(a)
    tl.store(dh_ptr + a_at, (dy * b * s * (1.0 + a * (1.0 - s))).to(dh_ptr.dtype.element_ty), mask=inside)
    tl.store(dh_ptr + a_at + n, (dy * a * s).to(dh_ptr.dtype.element_ty), mask=inside)


@torch.library.custom_op("archsearch::swiglu", mutates_args=())
def _swiglu_op(h: Tensor) -> Tensor:
    h = h.contiguous()
    n = h.shape[-1] // 2
    y = h.new_empty(*h.shape[:-1], n)
    _swiglu_fwd_kernel[(triton.cdiv(y.numel(), BLOCK),)](h, y, y.numel(), n, BLOCK=BLOCK)
    return y


@_swiglu_op.register_fake
def _(h: Tensor) -> Tensor:
    return h.new_empty(*h.shape[:-1], h.shape[-1] // 2)


@torch.library.custom_op("archsearch::swiglu_backward", mutates_args=())
def _swiglu_backward_op(h: Tensor, dy: Tensor) -> Tensor:
    h = h.contiguous()
    dh = torch.empty_like(h)
    _swiglu_bwd_kernel[(triton.cdiv(dy.numel(), BLOCK),)](h, dy.contiguous(), dh, dy.numel(), h.shape[-1] // 2, BLOCK=BLOCK)
    return dh


@_swiglu_backward_op.register_fake
def _(h: Tensor, dy: Tensor) -> Tensor:
    return h.new_empty(h.shape)


def _swiglu_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _swiglu_backward(ctx, dy: Tensor) -> Tensor:
    return _swiglu_backward_op(*ctx.saved_tensors, dy)


_swiglu_op.register_autograd(_swiglu_backward, setup_context=_swiglu_setup)


def swiglu(h: Tensor) -> Tensor:
    """silu(h[..., :n]) * h[..., n:] for h [..., 2n] -> [..., n] in h's dtype; one Triton kernel each way, fp32
    arithmetic. A `torch.library` op (archsearch::swiglu), so `torch.compile` keeps it in one graph."""
    if h.shape[-1] % 2:
        raise ValueError(f"swiglu: the last dimension must hold two halves, got {h.shape[-1]}")
    return _swiglu_op(h)
