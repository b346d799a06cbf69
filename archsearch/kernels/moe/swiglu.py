"""SwiGLU's elementwise core, silu(a) * b, as one Triton kernel each way.

Unfused, PyTorch runs silu, then the product (forward), and three kernels backward; fused, the forward reads a and
b once and writes the output, and the backward reads dy, a, b once and writes da and db, recomputing the sigmoid.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK = 2048


@triton.jit
def _swiglu_fwd_kernel(a_ptr, b_ptr, y_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = i < n
    a = tl.load(a_ptr + i, mask=inside, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + i, mask=inside, other=0.0).to(tl.float32)
    tl.store(y_ptr + i, (a * tl.sigmoid(a) * b).to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _swiglu_bwd_kernel(a_ptr, b_ptr, dy_ptr, da_ptr, db_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = i < n
    a = tl.load(a_ptr + i, mask=inside, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + i, mask=inside, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + i, mask=inside, other=0.0).to(tl.float32)
    s = tl.sigmoid(a)
    tl.store(da_ptr + i, (dy * b * s * (1.0 + a * (1.0 - s))).to(da_ptr.dtype.element_ty), mask=inside)
    tl.store(db_ptr + i, (dy * a * s).to(db_ptr.dtype.element_ty), mask=inside)


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        a, b = a.contiguous(), b.contiguous()
        y = torch.empty_like(a)
        _swiglu_fwd_kernel[(triton.cdiv(a.numel(), BLOCK),)](a, b, y, a.numel(), BLOCK=BLOCK)
        ctx.save_for_backward(a, b)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        a, b = ctx.saved_tensors
        da, db = torch.empty_like(a), torch.empty_like(b)
        _swiglu_bwd_kernel[(triton.cdiv(a.numel(), BLOCK),)](a, b, dy.contiguous(), da, db, a.numel(), BLOCK=BLOCK)
        return da, db


def swiglu(a: Tensor, b: Tensor) -> Tensor:
    """silu(a) * b (same shapes and dtype), forward and backward each one Triton kernel; fp32 arithmetic."""
    return _SwiGLU.apply(a, b)
