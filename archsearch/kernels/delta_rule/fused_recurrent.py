"""The delta rule token by token in one Triton kernel: decoding (one step) and short sequences, forward only.

Each program keeps a [K, BV] slice of one head's float32 state in registers and walks the tokens:
u_t = beta_t (v_t - S^T k_t), S <- S + k_t u_t^T, o_t = S^T (scale q_t). The state is read once and written once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._triton import INTERPRET


@triton.jit(do_not_specialize=["T"])
def _fused_recurrent_fwd_kernel(
    q, k, v, beta, h0, o, ht, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_H0: tl.constexpr, STORE_HT: tl.constexpr,
):  # fmt: skip
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos = i_b.to(tl.int64) * T
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_s = i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]

    b_s = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_s += tl.load(h0 + p_s, mask=m_kv, other=0.0).to(tl.float32)
    p_q = q + (bos * H + i_h) * K + o_k
    p_k = k + (bos * H + i_h) * K + o_k
    p_v = v + (bos * H + i_h) * V + o_v
    p_o = o + (bos * H + i_h) * V + o_v
    p_b = beta + bos * H + i_h
    for _ in range(T):
        b_q = tl.load(p_q, mask=m_k, other=0.0).to(tl.float32) * scale
        b_k = tl.load(p_k, mask=m_k, other=0.0).to(tl.float32)
        b_v = tl.load(p_v, mask=m_v, other=0.0).to(tl.float32)
        b_beta = tl.load(p_b).to(tl.float32)
        b_u = b_beta * (b_v - tl.sum(b_s * b_k[:, None], 0))
        b_s += b_k[:, None] * b_u[None, :]
        b_o = tl.sum(b_s * b_q[:, None], 0)
        tl.store(p_o, b_o.to(p_o.dtype.element_ty), mask=m_v)
        p_q += H * K
        p_k += H * K
        p_v += H * V
        p_o += H * V
        p_b += H
    if STORE_HT:
        tl.store(ht + p_s, b_s, mask=m_kv)


@torch.library.custom_op("archsearch::fused_recurrent_delta_rule", mutates_args=())
def _recurrent_op(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, scale: float, initial_state: Tensor | None, output_final_state: bool
) -> tuple[Tensor, Tensor]:
    """(o, final state or an empty tensor)."""
    b, t, nh, dk = q.shape
    dv = v.shape[-1]
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    bk = max(16, triton.next_power_of_2(dk))
    bv = min(max(16, triton.next_power_of_2(dv)), 32 if bk <= 128 else 16)
    o = torch.empty_like(v)
    ht = q.new_empty(b, nh, dk, dv, dtype=torch.float32) if output_final_state else q.new_empty(0, dtype=torch.float32)
    h0 = initial_state.contiguous() if initial_state is not None else None
    _fused_recurrent_fwd_kernel[(triton.cdiv(dv, bv), b * nh)](
        q, k, v, beta, h0, o, ht, scale, t, H=nh, K=dk, V=dv, BK=bk, BV=bv,
        USE_H0=h0 is not None, STORE_HT=output_final_state,
        **({} if INTERPRET else {"num_warps": 1 if bk * bv <= 2048 else 4}),
    )  # fmt: skip
    return o, ht


@_recurrent_op.register_fake
def _(q, k, v, beta, scale, initial_state, output_final_state) -> tuple[Tensor, Tensor]:
    b, _, nh, dk = q.shape
    state = (b, nh, dk, v.shape[-1]) if output_final_state else (0,)
    return v.new_empty(v.shape), q.new_empty(state, dtype=torch.float32)


def fused_recurrent_delta_rule_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The recurrence over q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H]: (o in the dtype of v, final state
    in float32 or None). No autograd: use the chunked form for training. A `torch.library` op
    (archsearch::fused_recurrent_delta_rule), so a compiled decoder keeps it in one graph."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    o, ht = _recurrent_op(q, k, v, beta, scale, initial_state, output_final_state)
    return o, ht if output_final_state else None


def delta_rule_step_triton(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, state: Tensor, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """One token: q, k [B, H, K], v [B, H, V], beta [B, H], state [B, H, K, V] -> (o [B, H, V], new state)."""
    o, s = fused_recurrent_delta_rule_triton(
        q[:, None], k[:, None], v[:, None], beta[:, None], scale, state, output_final_state=True
    )
    return o[:, 0], s
