"""Short causal depthwise convolution in Triton, on the channels-last layout the projections produce.

Each program takes a [BLOCK_T, BLOCK_C] tile of the output and sums its K shifted input tiles (K <= 16, unrolled;
the shifted reads hit the cache). The backward pass computes dx the same way, anti-causally, and in the same
program the tile's share of dweight, which a second step sums over tiles (no atomics: deterministic). A backward
program takes up to TILES_PER_PROGRAM tiles along T (fewer partials to sum), fewer when the grid would leave SMs
idle: at the proxy's 16 x 256 the eight-tile grid held 32 to 96 programs, and this kernel was a step's largest.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_K = 16
BLOCK_T, BLOCK_C, TILES_PER_PROGRAM = 32, 128, 8


@triton.jit
def _short_conv_fwd_kernel(x_ptr, w_ptr, y_ptr, T, C, K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    b = tl.program_id(2).to(tl.int64)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    in_c = c < C
    acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for j in tl.static_range(K):
        src = t - (K - 1) + j
        ok = ((src >= 0) & (src < T))[:, None] & in_c[None, :]
        x = tl.load(x_ptr + (b * T + src[:, None]) * C + c[None, :], mask=ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + c * K + j, mask=in_c, other=0.0).to(tl.float32)
        acc += x * w[None, :]
    out = (t < T)[:, None] & in_c[None, :]
    tl.store(y_ptr + (b * T + t[:, None]) * C + c[None, :], acc.to(y_ptr.dtype.element_ty), mask=out)


@triton.jit
def _short_conv_bwd_kernel(
    x_ptr, w_ptr, dy_ptr, dx_ptr, dw_ptr, T, C,
    K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr, TILES: tl.constexpr,
):  # fmt: skip
    """dx[t] = sum_j w[j] dy[t + (K - 1) - j]; this program's part of dw[j] = sum_t dy[t] x[t - (K - 1) + j]."""
    b = tl.program_id(2).to(tl.int64)
    group = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    in_c = c < C
    part = (b * tl.num_programs(0) + group) * K  # this program's rows of the dw partials [programs, K, C]
    for j in tl.static_range(K):
        w = tl.load(w_ptr + c * K + j, mask=in_c, other=0.0).to(tl.float32)
        dw = tl.zeros((BLOCK_C,), dtype=tl.float32)
        for tile in tl.static_range(TILES):
            t = (group * TILES + tile) * BLOCK_T + tl.arange(0, BLOCK_T)
            here = (t < T)[:, None] & in_c[None, :]
            dy = tl.load(dy_ptr + (b * T + t[:, None]) * C + c[None, :], mask=here, other=0.0).to(tl.float32)
            src = t - (K - 1) + j
            ok = ((src >= 0) & (src < T))[:, None] & in_c[None, :]
            x = tl.load(x_ptr + (b * T + src[:, None]) * C + c[None, :], mask=ok, other=0.0).to(tl.float32)
            dw += tl.sum(dy * x, axis=0)
        tl.store(dw_ptr + (part + j) * C + c, dw, mask=in_c)
    for tile in tl.static_range(TILES):
        t = (group * TILES + tile) * BLOCK_T + tl.arange(0, BLOCK_T)
        acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
        for j in tl.static_range(K):
            dst = t + (K - 1) - j
            ok = (dst < T)[:, None] & in_c[None, :]
            dy = tl.load(dy_ptr + (b * T + dst[:, None]) * C + c[None, :], mask=ok, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + c * K + j, mask=in_c, other=0.0).to(tl.float32)
            acc += dy * w[None, :]
        here = (t < T)[:, None] & in_c[None, :]
        tl.store(dx_ptr + (b * T + t[:, None]) * C + c[None, :], acc.to(dx_ptr.dtype.element_ty), mask=here)


@torch.library.custom_op("archsearch::short_conv", mutates_args=())
def _short_conv_op(x: Tensor, weight: Tensor) -> Tensor:
    x, w = x.contiguous(), weight.contiguous()
    b, t, c = x.shape
    y = torch.empty_like(x)
    grid = (triton.cdiv(t, BLOCK_T), triton.cdiv(c, BLOCK_C), b)
    _short_conv_fwd_kernel[grid](x, w, y, t, c, K=w.shape[1], BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C)
    return y


@_short_conv_op.register_fake
def _(x: Tensor, weight: Tensor) -> Tensor:
    return x.new_empty(x.shape)


@torch.library.custom_op("archsearch::short_conv_backward", mutates_args=())
def _short_conv_backward_op(x: Tensor, weight: Tensor, dy: Tensor) -> tuple[Tensor, Tensor]:
    x, w, dy = x.contiguous(), weight.contiguous(), dy.contiguous()
    b, t, c = x.shape
    k = w.shape[1]
    dx = torch.empty_like(x)
    tiles = tiles_per_program(t, c, b, _multiprocessors(x.device))
    groups = triton.cdiv(t, BLOCK_T * tiles)
    dw = torch.empty(b * groups, k, c, device=x.device, dtype=torch.float32)
    grid = (groups, triton.cdiv(c, BLOCK_C), b)
    _short_conv_bwd_kernel[grid](x, w, dy, dx, dw, t, c, K=k, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C, TILES=tiles)
    return dx, dw.sum(0).T.to(w.dtype).contiguous()


def tiles_per_program(t: int, c: int, b: int, multiprocessors: int) -> int:
    """Tiles along T per backward program: TILES_PER_PROGRAM, halved while the grid would hold fewer than two
    programs per multiprocessor."""
    tiles, c_blocks = TILES_PER_PROGRAM, triton.cdiv(c, BLOCK_C)
    while tiles > 1 and triton.cdiv(t, BLOCK_T * tiles) * c_blocks * b < 2 * multiprocessors:
        tiles //= 2
    return tiles


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


@_short_conv_backward_op.register_fake
def _(x: Tensor, weight: Tensor, dy: Tensor) -> tuple[Tensor, Tensor]:
    return x.new_empty(x.shape), weight.new_empty(weight.shape)


def _short_conv_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _short_conv_backward(ctx, dy: Tensor):
    return _short_conv_backward_op(*ctx.saved_tensors, dy)


_short_conv_op.register_autograd(_short_conv_backward, setup_context=_short_conv_setup)


def short_conv_triton(x: Tensor, weight: Tensor) -> Tensor:
    """`short_conv` (see `reference`) through the Triton kernels: x [B, T, C], weight [C, K] with K <= MAX_K.

    A `torch.library` op (archsearch::short_conv), so `torch.compile` keeps it in one graph."""
    if weight.shape[-1] > MAX_K:
        raise ValueError(f"short_conv_triton: kernel size {weight.shape[-1]} is over {MAX_K}")
    return _short_conv_op(x, weight)
