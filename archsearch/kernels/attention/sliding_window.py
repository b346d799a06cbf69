"""Causal sliding-window attention in Triton (flash-attention style), forward and backward, on [B, T, H, D] tensors.

Why our own kernel rather than FlexAttention: it reads the blocks' [B, T, H, D] layout and grouped-query heads in
place, and it needs no `torch.compile`, where FlexAttention compiles once per sequence length (a cost every trial
and every new prefill length pays) and sits behind compiled wrappers that add host time to every call. Four launches
per training step (one forward, three backward), registered as `torch.library` ops with their autograd formula.

Each program visits only the key blocks inside its queries' window, in three runs: the blocks cut by the window's
far edge (masked), the blocks every query of the program sees whole (no mask), and the blocks on the diagonal
(masked). Softmax statistics are kept in base 2. The backward recomputes the probabilities from the saved
log-sum-exp: one kernel per key block accumulates dK and dV over the queries that see it (over every query head
of its group, so no atomics), one per query block accumulates dQ.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

_LOG2E = 1.4426950408889634


# (BLOCK_M, BLOCK_N, warps, stages) per kernel for head_dim <= 64, <= 128 and 256: the fastest of 16 to 20 configs
# per kernel timed alone on an H100 at B8 T2048 H16 D64 W512 and B1 T16384 H16 D128 W1024 (benchmarks/RESULTS.md);
# the 256 row is a guess that fits the registers. Fixed rather than autotuned: autotuning costs every new process
# its compiles and timings, and the autotuner's dispatch adds host time to each launch.
_CONFIGS = {
    "fwd": ((64, 64, 4, 3), (64, 64, 4, 3), (32, 32, 4, 2)),
    "dkdv": ((32, 64, 4, 3), (64, 64, 4, 2), (32, 32, 4, 2)),
    "dq": ((64, 32, 4, 3), (64, 64, 4, 2), (32, 32, 4, 2)),
}


def _config(kernel: str, head_dim: int) -> dict:
    m, n, warps, stages = _CONFIGS[kernel][0 if head_dim <= 64 else 1 if head_dim <= 128 else 2]
    return {"BLOCK_M": m, "BLOCK_N": n, "num_warps": warps, "num_stages": stages}


@triton.jit
def _key_range(p_first, p_last, T_K, WINDOW, BLOCK_N: tl.constexpr):
    """Key blocks for queries at positions [p_first, p_last]: [lo, full_lo) masked by the window's edge,
    [full_lo, full_hi) seen whole by every query, [full_hi, hi) masked on the diagonal."""
    lo = tl.maximum(p_first - WINDOW + 1, 0) // BLOCK_N * BLOCK_N
    hi = tl.minimum(p_last + 1, T_K)
    full_lo = tl.maximum(tl.cdiv(tl.maximum(p_last - WINDOW + 1, 0), BLOCK_N) * BLOCK_N, lo)
    full_hi = (p_first + 1) // BLOCK_N * BLOCK_N
    if full_hi < full_lo:
        full_lo = lo
        full_hi = lo
    return lo, full_lo, full_hi, hi


@triton.jit
def _visible(pos_q, pos_k, T_K, WINDOW):
    return (pos_k[None, :] <= pos_q[:, None]) & (pos_k[None, :] > pos_q[:, None] - WINDOW) & (pos_k[None, :] < T_K)


@triton.jit
def _kv_tiles(k_base, v_base, kv_stride, pos_k, T_K, MASKED: tl.constexpr, HEAD_D: tl.constexpr):
    """The key and value rows pos_k; only a masked block can reach past T_K."""
    at = pos_k[:, None] * kv_stride + tl.arange(0, HEAD_D)[None, :]
    if MASKED:
        in_k = (pos_k < T_K)[:, None]
        return tl.load(k_base + at, mask=in_k, other=0.0), tl.load(v_base + at, mask=in_k, other=0.0)
    return tl.load(k_base + at), tl.load(v_base + at)


@triton.jit
def _fwd_blocks(
    acc, l_i, m_i, q, k_base, v_base, kv_stride, pos_q, start, end, T_K, WINDOW, qk_scale,
    MASKED: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_D: tl.constexpr,
):  # fmt: skip
    for n0 in range(start, end, BLOCK_N):
        pos_k = n0 + tl.arange(0, BLOCK_N)
        k, v = _kv_tiles(k_base, v_base, kv_stride, pos_k, T_K, MASKED, HEAD_D)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        if MASKED:
            s = tl.where(_visible(pos_q, pos_k, T_K, WINDOW), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_ref = m_new
        if MASKED:  # a row that has seen no key yet subtracts 0, not -inf (which would give NaN)
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_ref[:, None])
        alpha = tl.math.exp2(m_i - m_ref)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _head(PTR, b, h, T, HEADS, HEAD_D: tl.constexpr):
    """Where head h of sequence b starts in a contiguous [B, T, HEADS, HEAD_D] tensor; its rows are HEADS * HEAD_D
    apart. int64: the tensor may pass 2^31 elements."""
    return PTR + (b.to(tl.int64) * T * HEADS + h) * HEAD_D


@triton.jit
def _fwd_kernel(
    Q, K, V, OUT, LSE, H, T_Q, T_K, WINDOW, qk_scale,
    GROUP: tl.constexpr, HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    m0 = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    offset = T_K - T_Q
    rows = m0 + tl.arange(0, BLOCK_M)
    d = tl.arange(0, HEAD_D)
    in_q = rows < T_Q
    q = tl.load(_head(Q, b, h, T_Q, H, HEAD_D) + rows[:, None] * H * HEAD_D + d[None, :], mask=in_q[:, None], other=0.0)
    h_kv = H // GROUP
    k_base = _head(K, b, h // GROUP, T_K, h_kv, HEAD_D)
    v_base = _head(V, b, h // GROUP, T_K, h_kv, HEAD_D)
    pos_q = rows + offset
    lo, full_lo, full_hi, hi = _key_range(m0 + offset, m0 + BLOCK_M - 1 + offset, T_K, WINDOW, BLOCK_N)
    acc = tl.zeros((BLOCK_M, HEAD_D), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    args = (k_base, v_base, h_kv * HEAD_D, pos_q)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, *args, lo, full_lo, T_K, WINDOW, qk_scale, True, BLOCK_N, HEAD_D)
    acc, l_i, m_i = _fwd_blocks(
        acc, l_i, m_i, q, *args, full_lo, full_hi, T_K, WINDOW, qk_scale, False, BLOCK_N, HEAD_D
    )
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, *args, full_hi, hi, T_K, WINDOW, qk_scale, True, BLOCK_N, HEAD_D)
    # every query sees at least itself, so l_i > 0 on real rows; padding rows are not stored
    l_i = tl.where(in_q, l_i, 1.0)
    out = (acc / l_i[:, None]).to(OUT.dtype.element_ty)
    tl.store(_head(OUT, b, h, T_Q, H, HEAD_D) + rows[:, None] * H * HEAD_D + d[None, :], out, mask=in_q[:, None])
    tl.store(LSE + bh * T_Q + rows, m_i + tl.math.log2(l_i), mask=in_q)


@triton.jit
def _delta_kernel(OUT, DO, DELTA, H, T_Q, HEAD_D: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    at = rows[:, None] * H * HEAD_D + tl.arange(0, HEAD_D)[None, :]
    inside = (rows < T_Q)[:, None]
    o = tl.load(_head(OUT, b, h, T_Q, H, HEAD_D) + at, mask=inside, other=0.0)
    do = tl.load(_head(DO, b, h, T_Q, H, HEAD_D) + at, mask=inside, other=0.0)
    tl.store(DELTA + bh * T_Q + rows, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=rows < T_Q)


@triton.jit
def _dkdv_blocks(
    dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qt, stride_dot, pos_k, start, end, offset, T_Q, T_K,
    WINDOW, qk_scale, MASKED: tl.constexpr, BLOCK_M: tl.constexpr, HEAD_D: tl.constexpr,
):  # fmt: skip
    d = tl.arange(0, HEAD_D)
    for m0 in range(start, end, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        if MASKED:
            in_q = rows < T_Q
            q = tl.load(q_base + rows[:, None] * stride_qt + d[None, :], mask=in_q[:, None], other=0.0)
            do = tl.load(do_base + rows[:, None] * stride_dot + d[None, :], mask=in_q[:, None], other=0.0)
            lse = tl.load(lse_base + rows, mask=in_q, other=0.0)
            delta = tl.load(delta_base + rows, mask=in_q, other=0.0)
        else:
            q = tl.load(q_base + rows[:, None] * stride_qt + d[None, :])
            do = tl.load(do_base + rows[:, None] * stride_dot + d[None, :])
            lse = tl.load(lse_base + rows)
            delta = tl.load(delta_base + rows)
        # transposed scores [keys, queries]: the products below then need no transposes of p and ds
        st = tl.dot(k, tl.trans(q)) * qk_scale
        pt = tl.math.exp2(st - lse[None, :])
        if MASKED:
            seen = tl.trans(_visible(rows + offset, pos_k, T_K, WINDOW)) & (rows < T_Q)[None, :]
            pt = tl.where(seen, pt, 0.0)
        dv += tl.dot(pt.to(do.dtype), do)
        dpt = tl.dot(v, tl.trans(do))
        dst = pt * (dpt - delta[None, :])
        dk += tl.dot(dst.to(q.dtype), q)
    return dk, dv


@triton.jit
def _dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, H, T_Q, T_K, WINDOW, qk_scale, sm_scale,
    GROUP: tl.constexpr, HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    n0 = tl.program_id(0) * BLOCK_N
    bkv = tl.program_id(1)
    h_kv = H // GROUP
    b, hkv = bkv // h_kv, bkv % h_kv
    offset = T_K - T_Q
    pos_k = n0 + tl.arange(0, BLOCK_N)
    kv_at = pos_k[:, None] * h_kv * HEAD_D + tl.arange(0, HEAD_D)[None, :]
    in_k = (pos_k < T_K)[:, None]
    k = tl.load(_head(K, b, hkv, T_K, h_kv, HEAD_D) + kv_at, mask=in_k, other=0.0)
    v = tl.load(_head(V, b, hkv, T_K, h_kv, HEAD_D) + kv_at, mask=in_k, other=0.0)
    # queries (by index) that see some key of the block: positions [n0, n0 + BLOCK_N - 1 + WINDOW - 1]; all of
    # the block's keys are seen by positions [n0 + BLOCK_N - 1, n0 + WINDOW - 1]
    lo = tl.maximum(n0 - offset, 0) // BLOCK_M * BLOCK_M
    hi = tl.minimum(tl.maximum(n0 + BLOCK_N + WINDOW - 1 - offset, 0), T_Q)
    full_lo = tl.maximum(tl.cdiv(tl.maximum(n0 + BLOCK_N - 1 - offset, 0), BLOCK_M) * BLOCK_M, lo)
    full_hi = tl.minimum(tl.maximum(n0 + WINDOW - offset, 0) // BLOCK_M, T_Q // BLOCK_M) * BLOCK_M
    if full_hi < full_lo:
        full_lo = lo
        full_hi = lo
    dk = tl.zeros((BLOCK_N, HEAD_D), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, HEAD_D), dtype=tl.float32)
    tail = (offset, T_Q, T_K, WINDOW, qk_scale)
    for g in range(GROUP):
        h = hkv * GROUP + g
        q_base, do_base = _head(Q, b, h, T_Q, H, HEAD_D), _head(DO, b, h, T_Q, H, HEAD_D)
        stats = (LSE + (b * H + h) * T_Q, DELTA + (b * H + h) * T_Q, H * HEAD_D, H * HEAD_D, pos_k)
        dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, *stats, lo, full_lo, *tail, True, BLOCK_M, HEAD_D)
        dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, *stats, full_lo, full_hi, *tail, False, BLOCK_M, HEAD_D)
        dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, *stats, full_hi, hi, *tail, True, BLOCK_M, HEAD_D)
    tl.store(_head(DK, b, hkv, T_K, h_kv, HEAD_D) + kv_at, (dk * sm_scale).to(DK.dtype.element_ty), mask=in_k)
    tl.store(_head(DV, b, hkv, T_K, h_kv, HEAD_D) + kv_at, dv.to(DV.dtype.element_ty), mask=in_k)


@triton.jit
def _dq_blocks(
    dq, q, do, lse, delta, k_base, v_base, kv_stride, pos_q, start, end, T_K, WINDOW, qk_scale,
    MASKED: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_D: tl.constexpr,
):  # fmt: skip
    for n0 in range(start, end, BLOCK_N):
        pos_k = n0 + tl.arange(0, BLOCK_N)
        k, v = _kv_tiles(k_base, v_base, kv_stride, pos_k, T_K, MASKED, HEAD_D)
        p = tl.math.exp2(tl.dot(q, tl.trans(k)) * qk_scale - lse[:, None])
        if MASKED:
            p = tl.where(_visible(pos_q, pos_k, T_K, WINDOW), p, 0.0)
        dp = tl.dot(do, tl.trans(v))
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k)
    return dq


@triton.jit
def _dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, H, T_Q, T_K, WINDOW, qk_scale, sm_scale,
    GROUP: tl.constexpr, HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    m0 = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    offset = T_K - T_Q
    rows = m0 + tl.arange(0, BLOCK_M)
    q_at = rows[:, None] * H * HEAD_D + tl.arange(0, HEAD_D)[None, :]
    in_q = rows < T_Q
    q = tl.load(_head(Q, b, h, T_Q, H, HEAD_D) + q_at, mask=in_q[:, None], other=0.0)
    do = tl.load(_head(DO, b, h, T_Q, H, HEAD_D) + q_at, mask=in_q[:, None], other=0.0)
    lse = tl.load(LSE + bh * T_Q + rows, mask=in_q, other=0.0)
    delta = tl.load(DELTA + bh * T_Q + rows, mask=in_q, other=0.0)
    h_kv = H // GROUP
    k_base = _head(K, b, h // GROUP, T_K, h_kv, HEAD_D)
    v_base = _head(V, b, h // GROUP, T_K, h_kv, HEAD_D)
    lo, full_lo, full_hi, hi = _key_range(m0 + offset, m0 + BLOCK_M - 1 + offset, T_K, WINDOW, BLOCK_N)
    dq = tl.zeros((BLOCK_M, HEAD_D), dtype=tl.float32)
    args = (q, do, lse, delta, k_base, v_base, h_kv * HEAD_D, rows + offset)
    dq = _dq_blocks(dq, *args, lo, full_lo, T_K, WINDOW, qk_scale, True, BLOCK_N, HEAD_D)
    dq = _dq_blocks(dq, *args, full_lo, full_hi, T_K, WINDOW, qk_scale, False, BLOCK_N, HEAD_D)
    dq = _dq_blocks(dq, *args, full_hi, hi, T_K, WINDOW, qk_scale, True, BLOCK_N, HEAD_D)
    tl.store(_head(DQ, b, h, T_Q, H, HEAD_D) + q_at, (dq * sm_scale).to(DQ.dtype.element_ty), mask=in_q[:, None])


@torch.library.custom_op("archsearch::sliding_window_attention", mutates_args=())
def _attention_op(q: Tensor, k: Tensor, v: Tensor, window: int, scale: float) -> tuple[Tensor, Tensor]:
    """(o, the rows' log-sum-exp [B, H, T_q] in float32, which the backward reuses)."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # the kernels derive strides from the shapes
    b, t_q, h, d = q.shape
    t_k, group = k.shape[1], h // k.shape[2]
    o = torch.empty_like(q)
    lse = torch.empty(b, h, t_q, device=q.device, dtype=torch.float32)
    config = _config("fwd", d)
    _fwd_kernel[(triton.cdiv(t_q, config["BLOCK_M"]), b * h)](
        q, k, v, o, lse, h, t_q, t_k, window, scale * _LOG2E, GROUP=group, HEAD_D=d, **config
    )
    return o, lse


@_attention_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, window: int, scale: float) -> tuple[Tensor, Tensor]:
    b, t_q, h, _ = q.shape
    return q.new_empty(q.shape), q.new_empty(b, h, t_q, dtype=torch.float32)


@torch.library.custom_op("archsearch::sliding_window_attention_backward", mutates_args=())
def _attention_backward_op(
    q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, do: Tensor, window: int, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    q, k, v, o, lse, do = (x.contiguous() for x in (q, k, v, o, lse, do))
    b, t_q, h, d = q.shape
    t_k, h_kv = k.shape[1], k.shape[2]
    delta = torch.empty_like(lse)
    _delta_kernel[(triton.cdiv(t_q, 64), b * h)](o, do, delta, h, t_q, HEAD_D=d, BLOCK=64)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    common = (h, t_q, t_k, window, scale * _LOG2E, scale)
    config = _config("dkdv", d)
    _dkdv_kernel[(triton.cdiv(t_k, config["BLOCK_N"]), b * h_kv)](
        q, k, v, do, lse, delta, dk, dv, *common, GROUP=h // h_kv, HEAD_D=d, **config
    )
    config = _config("dq", d)
    _dq_kernel[(triton.cdiv(t_q, config["BLOCK_M"]), b * h)](
        q, k, v, do, lse, delta, dq, *common, GROUP=h // h_kv, HEAD_D=d, **config
    )
    return dq, dk, dv


@_attention_backward_op.register_fake
def _(q, k, v, o, lse, do, window, scale) -> tuple[Tensor, Tensor, Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _attention_setup(ctx, inputs, output) -> None:
    q, k, v, ctx.window, ctx.scale = inputs
    ctx.save_for_backward(q, k, v, *output)


def _attention_backward(ctx, do: Tensor, _dlse: Tensor):
    dq, dk, dv = _attention_backward_op(*ctx.saved_tensors, do, ctx.window, ctx.scale)
    return dq, dk, dv, None, None


_attention_op.register_autograd(_attention_backward, setup_context=_attention_setup)


def sliding_window_attention(q: Tensor, k: Tensor, v: Tensor, window: int, scale: float | None = None) -> Tensor:
    """Causal attention of q [B, T_q, H, D] over the `window` most recent of k, v [B, T_k, H_kv, D] (query i at
    position T_k - T_q + i; H_kv divides H; D a power of two in [16, 256]) -> [B, T_q, H, D], differentiable.

    Made for fp16 and bf16 (float32 accumulation); float32 inputs get tf32 products on a GPU. A `torch.library` op
    (archsearch::sliding_window_attention), so `torch.compile` keeps it in one graph."""
    # contiguous here, so the tensors saved for the backward are the ones the kernels read
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return _attention_op(q, k, v, window, q.shape[-1] ** -0.5 if scale is None else scale)[0]
