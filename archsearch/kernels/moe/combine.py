"""The two ends of the sorted dispatch in Triton: gathering each token's k expert outputs back with their gates, and
the token gradient of the gather into sorted order; no zero-filled slot buffer, no float32 copies, no atomics.

pos [N, k] maps token n's slot j to its row in the expert-sorted order, -1 where the slot was dropped.

    combine:  y[n] = sum_j gates[n, j] out[pos[n, j]]        (float32 sum, y in out's dtype)

Backward: dout[pos[n, j]] = gates[n, j] dy[n] (each sorted row has exactly one slot), dgates[n, j] = dy[n] . out[pos[n, j]].
The gather xs = x[token of each sorted row] has the gradient dx[n] = sum_j dxs[pos[n, j]]: the combine with unit gates.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_N, BLOCK_D = 16, 128


@triton.jit
def _combine_kernel(
    out_ptr, pos_ptr, gates_ptr, y_ptr, N, D,
    K: tl.constexpr, HAS_GATES: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    in_rows = rows < N
    in_cols = cols < D
    acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for j in tl.static_range(K):
        p = tl.load(pos_ptr + rows * K + j, mask=in_rows, other=-1).to(tl.int64)
        ok = (p >= 0)[:, None] & in_cols[None, :]
        v = tl.load(out_ptr + p[:, None] * D + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        if HAS_GATES:
            g = tl.load(gates_ptr + rows * K + j, mask=in_rows, other=0.0).to(tl.float32)
            v = v * g[:, None]
        acc += v
    at = rows.to(tl.int64)[:, None] * D + cols[None, :]
    tl.store(y_ptr + at, acc.to(y_ptr.dtype.element_ty), mask=in_rows[:, None] & in_cols[None, :])


@triton.jit
def _combine_bwd_kernel(
    dy_ptr, out_ptr, pos_ptr, gates_ptr, dout_ptr, dgates_ptr, N, D,
    K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_rows = rows < N
    for j in tl.static_range(K):
        p = tl.load(pos_ptr + rows * K + j, mask=in_rows, other=-1).to(tl.int64)
        g = tl.load(gates_ptr + rows * K + j, mask=in_rows, other=0.0).to(tl.float32)
        kept = p >= 0
        dg = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for start in range(0, D, BLOCK_D):
            cols = start + tl.arange(0, BLOCK_D)
            ok = kept[:, None] & (cols < D)[None, :]
            dy = tl.load(dy_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], mask=ok, other=0.0).to(tl.float32)
            v = tl.load(out_ptr + p[:, None] * D + cols[None, :], mask=ok, other=0.0).to(tl.float32)
            dg += tl.sum(dy * v, axis=1)
            tl.store(
                dout_ptr + p[:, None] * D + cols[None, :], (dy * g[:, None]).to(dout_ptr.dtype.element_ty), mask=ok
            )
        tl.store(dgates_ptr + rows * K + j, dg.to(dgates_ptr.dtype.element_ty), mask=in_rows)


def _combine(out: Tensor, pos: Tensor, gates: Tensor | None, n: int) -> Tensor:
    d = out.shape[1]
    y = torch.empty(n, d, device=out.device, dtype=out.dtype)
    grid = (triton.cdiv(n, BLOCK_N), triton.cdiv(d, BLOCK_D))
    _combine_kernel[grid](
        out, pos, gates, y, n, d, K=pos.shape[1], HAS_GATES=gates is not None, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D
    )
    return y


@torch.library.custom_op("archsearch::moe_combine", mutates_args=())
def _combine_op(out: Tensor, pos: Tensor, gates: Tensor) -> Tensor:
    return _combine(out.contiguous(), pos.contiguous(), gates.contiguous(), pos.shape[0])


@_combine_op.register_fake
def _(out: Tensor, pos: Tensor, gates: Tensor) -> Tensor:
    return out.new_empty(pos.shape[0], out.shape[1])


@torch.library.custom_op("archsearch::moe_combine_backward", mutates_args=())
def _combine_backward_op(dy: Tensor, out: Tensor, pos: Tensor, gates: Tensor) -> tuple[Tensor, Tensor]:
    out, pos, gates = out.contiguous(), pos.contiguous(), gates.contiguous()
    n, k = pos.shape
    dout = torch.empty_like(out)
    dgates = torch.empty_like(gates)
    _combine_bwd_kernel[(triton.cdiv(n, BLOCK_N),)](
        dy.contiguous(), out, pos, gates, dout, dgates, n, out.shape[1], K=k, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D
    )
    return dout, dgates


@_combine_backward_op.register_fake
def _(dy: Tensor, out: Tensor, pos: Tensor, gates: Tensor) -> tuple[Tensor, Tensor]:
    return out.new_empty(out.shape), gates.new_empty(gates.shape)


def _combine_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _combine_backward(ctx, dy: Tensor):
    out, pos, gates = ctx.saved_tensors
    dout, dgates = _combine_backward_op(dy, out, pos, gates)
    return dout, None, dgates


_combine_op.register_autograd(_combine_backward, setup_context=_combine_setup)


@torch.library.custom_op("archsearch::moe_sum_slots", mutates_args=())
def _sum_slots_op(rows: Tensor, pos: Tensor) -> Tensor:
    return _combine(rows.contiguous(), pos.contiguous(), None, pos.shape[0])


@_sum_slots_op.register_fake
def _(rows: Tensor, pos: Tensor) -> Tensor:
    return rows.new_empty(pos.shape[0], rows.shape[1])


@torch.library.custom_op("archsearch::moe_gather", mutates_args=())
def _gather_op(x: Tensor, token: Tensor, pos: Tensor) -> Tensor:
    return x[token]


@_gather_op.register_fake
def _(x: Tensor, token: Tensor, pos: Tensor) -> Tensor:
    return x.new_empty(token.shape[0], x.shape[1])


def _gather_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[2])


def _gather_backward(ctx, dxs: Tensor):
    (pos,) = ctx.saved_tensors
    return _sum_slots_op(dxs, pos), None, None


_gather_op.register_autograd(_gather_backward, setup_context=_gather_setup)


def combine(out: Tensor, pos: Tensor, gates: Tensor) -> Tensor:
    """y [N, d] = sum_j gates[n, j] out[pos[n, j]] (pos -1: nothing), differentiable in out and gates."""
    return _combine_op(out, pos, gates)


def gather(x: Tensor, token: Tensor, pos: Tensor) -> Tensor:
    """x[token] (the sorted rows' tokens), whose gradient sums each token's rows through pos in a fixed order."""
    return _gather_op(x, token, pos)
