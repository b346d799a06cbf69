"""The chunkwise delta rule in Triton: WY representation within chunks, the state recurrence across them.

Shapes as in `reference`: q, k [B, T, H, K], v [B, T, H, V], beta [B, T, H], states [B, H, K, V] in float32.
Rows are tokens; a chunk holds C tokens (C = BT in the kernels). Per chunk, with S the state at its start,

    A = strict_tril(diag(beta) K K^T),  Tm = (I + A)^{-1},  W = Tm diag(beta) K,  U = Tm diag(beta) V
    U' = U - W S,   O = scale (Q S + causal(Q K^T) U'),   S <- S + K^T U'.

Forward, two launches:
  `_fwd_prepare_kernel`  one program per chunk: A, its inverse Tm (kept in float32 for the backward), W and U.
  `_fwd_state_kernel`    one program per (sequence, head, block of V columns), looping over the chunks: U', the
                         output (or, unfused, `_fwd_output_kernel` afterwards) and the start state of every chunk.
Backward, two (or three) launches:
  `_bwd_state_kernel`    reverse loop over the chunks: dU' = K dS + scale causal(Q K^T)^T dO and
                         dS <- dS + scale Q^T dO - W^T dU', saving dS at every chunk end and dU'.
  `_bwd_grads_kernel`    one program per chunk: dq, dk, dv and dbeta, through W and U and the inverse
                         (`_bwd_grads_kblock_kernel` for K > 64: fewer values live, K taken 64 columns at a time).
The inverse takes the 16 x 16 diagonal blocks by forward substitution and merges them with block products, either
as register tiles or in place in the float32 buffer that keeps Tm (`REG_BLOCKS`).

Dot operands are in the input dtype with float32 accumulation (as fla does), except products with Tm, which stay
in float32 (tf32 on the tensor cores for 16-bit inputs; exact float32 for float32 inputs).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._triton import autotune, first

CHUNK_SIZES = (16, 32, 64, 128)
# Head dims above 128 (a key block of 256) go to the reference. On the H200 (Triton 3.6) the state loops' configs
# need 253,952 to 327,680 bytes of shared memory there, past sm90's 232,448 (tests/test_kernel_resources.py); with
# single-stage configs that fit, the backward hit an illegal address at 192 and gave dk, dv, dbeta 47% off at 256,
# while the interpreter matched the reference at both (benchmarks/RESULTS.md, 2026-12-02).
MAX_HEAD_DIM = 128


# ----------------------------------------------------------------------------------------------------------------
# forward


_PREPARE_CONFIGS = [triton.Config({}, num_warps=w, num_stages=1) for w in (4, 8)]


@triton.jit
def _tril_inverse(b_a, o_r):
    """(I + A)^{-1} of strictly lower 16 x 16 blocks A, the last two dims of b_a (o_r: the row index, shaped to
    broadcast over them), by forward substitution: row i of X = (I + A)^{-1} - I is -a_i - a_i X."""
    b_x = -b_a
    for i in range(2, 16):
        b_r = -tl.sum(tl.where(o_r == i, b_a, 0.0), -2)
        b_r += tl.sum(tl.expand_dims(b_r, -1) * b_x, -2)
        b_x = tl.where(o_r == i, tl.expand_dims(b_r, -2), b_x)
    return b_x + (o_r == tl.arange(0, 16)).to(tl.float32)


@triton.jit
def _load_rows(p, rows, T, o_n, m_n, ld):
    """The [16, N] piece of a [T, N] matrix (row stride ld) at rows, zero past T."""
    return tl.load(p + rows[:, None] * ld + o_n[None, :], mask=(rows < T)[:, None] & m_n[None, :], other=0.0)


@triton.jit
def _store_tm_times(tms, xs, p, r0, T, o_n, m_n, ld, NB: tl.constexpr, TPREC: tl.constexpr):
    """Tm X, one 16-row block at a time from the register tiles (tms[i][j]: block (i, j) of Tm; xs[j]: 16-row
    piece j of X), stored from row r0 of a [T, N] matrix."""
    for i in tl.static_range(NB):
        b_y = tl.dot(tms[i][0], xs[0], input_precision=TPREC)
        for j in tl.static_range(1, i + 1):
            b_y = tl.dot(tms[i][j], xs[j], b_y, input_precision=TPREC)
        rows = r0 + i * 16 + tl.arange(0, 16)
        m_rn = (rows < T)[:, None] & m_n[None, :]
        tl.store(p + rows[:, None] * ld + o_n[None, :], b_y.to(p.dtype.element_ty), mask=m_rn)


@autotune(_PREPARE_CONFIGS, key=["H", "K", "V", "BT", "REG_BLOCKS", "REG_SUBST"])
@triton.jit(do_not_specialize=["T"])
def _fwd_prepare_kernel(
    k, v, beta, w, u, tm, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr, TPREC: tl.constexpr,
    REG_BLOCKS: tl.constexpr, REG_SUBST: tl.constexpr,
):  # fmt: skip
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos = i_b.to(tl.int64) * T
    o_c = tl.arange(0, BT)
    o_t = i_t * BT + o_c
    m_t = o_t < T
    o_k = tl.arange(0, BK)
    m_k = o_k < K

    k += (bos * H + i_h) * K
    w += (bos * H + i_h) * K
    v += (bos * H + i_h) * V
    u += (bos * H + i_h) * V
    tm += (bos * H + i_h) * BT
    beta += bos * H + i_h
    p_tm = tm + o_t[:, None] * (H * BT) + o_c[None, :]
    if REG_BLOCKS:
        # A's diagonal blocks and their inverses at once as [NB, 16, 16], from a batched dot (in its layout, with 4
        # warps, the substitution's loop compiles without a barrier for sm90), then each block of A and Tm below
        # them a 16 x 16 register tile; Tm goes to memory once, for the backward
        NB: tl.constexpr = BT // 16
        o_i = tl.arange(0, 16)
        r3 = o_i[None, :, None]
        b3 = tl.arange(0, NB)[:, None, None]
        rows3 = i_t * BT + b3 * 16 + r3
        b_k3 = tl.load(k + rows3 * (H * K) + o_k[None, None, :], mask=(rows3 < T) & m_k[None, None, :], other=0.0)
        b_a3 = tl.dot(b_k3, tl.permute(b_k3, (0, 2, 1)), input_precision=PREC)
        b_a3 *= tl.load(beta + rows3 * H, mask=rows3 < T, other=0.0).to(tl.float32)
        b_t3 = _tril_inverse(tl.where(r3 > o_i[None, None, :], b_a3, 0.0), r3)
        b_ks = ()  # the chunk's 16-row pieces of K, and of beta
        b_bs = ()
        for i in tl.static_range(NB):
            rows = i_t * BT + i * 16 + o_i
            b_ks += (_load_rows(k, rows, T, o_k, m_k, H * K),)
            b_bs += (tl.load(beta + rows * H, mask=rows < T, other=0.0).to(tl.float32),)
        # block row i of Tm: Tm_ij = -Tm_ii sum_{j <= m < i} A_im Tm_mj, A_im = beta_i k_i k_m^T
        b_tms = ()
        for i in tl.static_range(NB):
            b_ai = ()
            for m in tl.static_range(i):
                b_ai += (tl.dot(b_ks[i], tl.trans(b_ks[m]), input_precision=PREC) * b_bs[i][:, None],)
            b_tii = tl.sum(tl.where(b3 == i, b_t3, 0.0), 0)
            b_row = ()
            for j in tl.static_range(i):
                b_acc = tl.dot(b_ai[j], b_tms[j][j], input_precision="ieee")
                for m in tl.static_range(j + 1, i):
                    b_acc = tl.dot(b_ai[m], b_tms[m][j], b_acc, input_precision="ieee")
                b_row += (-tl.dot(b_tii, b_acc, input_precision="ieee"),)
            b_tms += (b_row + (b_tii,),)
        above = o_c[None, :] // 16 > o_c[:, None] // 16
        tl.store(p_tm, tl.zeros([BT, BT], dtype=tl.float32), mask=m_t[:, None] & above)
        for i in tl.static_range(NB):
            rows = i_t * BT + i * 16 + o_i
            for j in tl.static_range(i + 1):
                tl.store(tm + rows[:, None] * (H * BT) + (j * 16 + o_i)[None, :], b_tms[i][j], mask=(rows < T)[:, None])

        b_kbs = ()
        for i in tl.static_range(NB):
            b_kbs += (b_ks[i].to(tl.float32) * b_bs[i][:, None],)
        _store_tm_times(b_tms, b_kbs, w, i_t * BT, T, o_k, m_k, H * K, NB, TPREC)
        for i_v in range(tl.cdiv(V, BV)):
            o_v = i_v * BV + tl.arange(0, BV)
            b_vbs = ()
            for i in tl.static_range(NB):
                rows = i_t * BT + i * 16 + o_i
                b_vbs += (_load_rows(v, rows, T, o_v, o_v < V, H * V).to(tl.float32) * b_bs[i][:, None],)
            _store_tm_times(b_tms, b_vbs, u, i_t * BT, T, o_v, o_v < V, H * V, NB, TPREC)
    else:
        b_beta = tl.load(beta + o_t * H, mask=m_t, other=0.0).to(tl.float32)
        b_k = tl.load(k + o_t[:, None] * (H * K) + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0)

        # A = strict_tril(diag(beta) K K^T), written where Tm will be built
        b_a = tl.dot(b_k, tl.trans(b_k), input_precision=PREC)
        b_a = tl.where(o_c[:, None] > o_c[None, :], b_a * b_beta[:, None], 0.0)
        tl.store(p_tm, b_a, mask=m_t[:, None])
        tl.debug_barrier()

        # the diagonal 16 x 16 blocks by forward substitution, all at once as [NB, 16, 16] in registers
        o_i = tl.arange(0, 16)
        if REG_SUBST:
            r3 = o_i[None, :, None]
            b3 = tl.arange(0, BT // 16)[:, None, None]
            rows3 = i_t * BT + b3 * 16 + r3
            p3 = tm + rows3 * (H * BT) + b3 * 16 + o_i[None, None, :]
            b_x3 = _tril_inverse(tl.load(p3, mask=rows3 < T, other=0.0), r3)
            tl.debug_barrier()  # every thread has read the blocks before they are overwritten
            tl.store(p3, b_x3, mask=rows3 < T)
        else:  # one block at a time, rows read back from memory
            eye = (o_i[:, None] == o_i[None, :]).to(tl.float32)
            for ib in tl.static_range(BT // 16):
                r0 = i_t * BT + ib * 16
                p_blk = tm + (r0 + o_i)[:, None] * (H * BT) + (ib * 16 + o_i)[None, :]
                m_blk = (r0 + o_i < T)[:, None]
                b_x = -tl.load(p_blk, mask=m_blk, other=0.0)
                for i in range(2, min(16, T - r0)):
                    b_r = -tl.load(tm + (r0 + i) * (H * BT) + ib * 16 + o_i, mask=o_i < i, other=0.0)
                    b_r += tl.sum(b_r[:, None] * b_x, 0)
                    b_x = tl.where((o_i == i)[:, None], b_r[None, :], b_x)
                tl.debug_barrier()
                tl.store(p_blk, b_x + eye, mask=m_blk)
        tl.debug_barrier()

        # the blocks below the diagonal: Tm_ij = -Tm_ii sum_{j <= m < i} A_im Tm_mj, j ascending so that the
        # A blocks still needed (m >= j) are not yet overwritten
        for ib in tl.static_range(1, BT // 16):
            ri = i_t * BT + ib * 16 + o_i
            m_ri = (ri < T)[:, None]
            for jb in tl.static_range(0, ib):
                b_acc = tl.zeros([16, 16], dtype=tl.float32)
                for mb in tl.static_range(jb, ib):
                    rm = i_t * BT + mb * 16 + o_i
                    b_aim = tl.load(tm + ri[:, None] * (H * BT) + (mb * 16 + o_i)[None, :], mask=m_ri, other=0.0)
                    b_tmj = tl.load(
                        tm + rm[:, None] * (H * BT) + (jb * 16 + o_i)[None, :], mask=(rm < T)[:, None], other=0.0
                    )
                    b_acc += tl.dot(b_aim, b_tmj, input_precision="ieee")
                b_tii = tl.load(tm + ri[:, None] * (H * BT) + (ib * 16 + o_i)[None, :], mask=m_ri, other=0.0)
                b_tij = -tl.dot(b_tii, b_acc, input_precision="ieee")
                tl.debug_barrier()
                tl.store(tm + ri[:, None] * (H * BT) + (jb * 16 + o_i)[None, :], b_tij, mask=m_ri)
                tl.debug_barrier()

        b_tm = tl.load(p_tm, mask=m_t[:, None], other=0.0)
        b_kb = b_k.to(tl.float32) * b_beta[:, None]
        b_w = tl.dot(b_tm, b_kb, input_precision=TPREC)
        m_tk = m_t[:, None] & m_k[None, :]
        tl.store(w + o_t[:, None] * (H * K) + o_k[None, :], b_w.to(w.dtype.element_ty), mask=m_tk)
        for i_v in range(tl.cdiv(V, BV)):
            o_v = i_v * BV + tl.arange(0, BV)
            m_tv = m_t[:, None] & (o_v < V)[None, :]
            b_v = tl.load(v + o_t[:, None] * (H * V) + o_v[None, :], mask=m_tv, other=0.0)
            b_u = tl.dot(b_tm, b_v.to(tl.float32) * b_beta[:, None], input_precision=TPREC)
            tl.store(u + o_t[:, None] * (H * V) + o_v[None, :], b_u.to(u.dtype.element_ty), mask=m_tv)


_STATE_CONFIGS = [triton.Config({"BV": bv}, num_warps=4, num_stages=ns) for bv, ns in ((32, 3), (64, 2), (16, 3))]


@autotune(_STATE_CONFIGS, key=["NBH", "H", "K", "V", "BT", "FUSE_O"])
@triton.jit(do_not_specialize=["T", "NBH"])
def _fwd_state_kernel(
    q, k, w, u, h0, o, h, vn, ht, scale, T, NBH,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_H0: tl.constexpr, STORE_H: tl.constexpr, STORE_VN: tl.constexpr, STORE_HT: tl.constexpr,
    FUSE_O: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos = i_b.to(tl.int64) * T
    NT = tl.cdiv(T, BT)
    o_c = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    dt = k.dtype.element_ty

    q += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    w += (bos * H + i_h) * K
    u += (bos * H + i_h) * V
    o += (bos * H + i_h) * V
    if STORE_VN:
        vn += (bos * H + i_h) * V
    if STORE_H:
        h += (i_b.to(tl.int64) * NT * H + i_h) * K * V
    p_s = o_k[:, None] * V + o_v[None, :]

    b_s = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        b_s += tl.load(h0 + i_bh.to(tl.int64) * K * V + p_s, mask=m_kv, other=0.0).to(tl.float32)
    for i_t in range(NT):
        o_t = i_t * BT + o_c
        m_t = o_t < T
        m_tk = m_t[:, None] & m_k[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        b_k = tl.load(k + o_t[:, None] * (H * K) + o_k[None, :], mask=m_tk, other=0.0)
        b_w = tl.load(w + o_t[:, None] * (H * K) + o_k[None, :], mask=m_tk, other=0.0)
        b_u = tl.load(u + o_t[:, None] * (H * V) + o_v[None, :], mask=m_tv, other=0.0)
        b_sd = b_s.to(dt)
        if STORE_H:
            tl.store(h + p_s, b_sd, mask=m_kv)
            h += H * K * V
        b_vn = b_u.to(tl.float32) - tl.dot(b_w, b_sd, input_precision=PREC)
        b_vnd = b_vn.to(dt)
        if STORE_VN:
            tl.store(vn + o_t[:, None] * (H * V) + o_v[None, :], b_vnd, mask=m_tv)
        if FUSE_O:
            b_q = tl.load(q + o_t[:, None] * (H * K) + o_k[None, :], mask=m_tk, other=0.0)
            b_p = tl.dot(b_q, tl.trans(b_k), input_precision=PREC)
            b_p = tl.where(o_c[:, None] >= o_c[None, :], b_p, 0.0).to(dt)
            b_o = tl.dot(b_q, b_sd, input_precision=PREC)
            b_o = tl.dot(b_p, b_vnd, b_o, input_precision=PREC)
            tl.store(o + o_t[:, None] * (H * V) + o_v[None, :], (b_o * scale).to(o.dtype.element_ty), mask=m_tv)
        b_s = tl.dot(tl.trans(b_k), b_vnd, b_s, input_precision=PREC)
    if STORE_HT:
        tl.store(ht + i_bh.to(tl.int64) * K * V + p_s, b_s, mask=m_kv)


_OUTPUT_CONFIGS = [triton.Config({"BV": bv}, num_warps=4, num_stages=2) for bv in (64, 32)]


@autotune(_OUTPUT_CONFIGS, key=["H", "K", "V", "BT"])
@triton.jit(do_not_specialize=["T"])
def _fwd_output_kernel(
    q, k, vn, h, o, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos = i_b.to(tl.int64) * T
    NT = tl.cdiv(T, BT)
    o_c = tl.arange(0, BT)
    o_t = i_t * BT + o_c
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_t, m_k, m_v = o_t < T, o_k < K, o_v < V
    m_tk = m_t[:, None] & m_k[None, :]
    m_tv = m_t[:, None] & m_v[None, :]
    dt = k.dtype.element_ty

    b_q = tl.load(q + (bos * H + i_h) * K + o_t[:, None] * (H * K) + o_k[None, :], mask=m_tk, other=0.0)
    b_k = tl.load(k + (bos * H + i_h) * K + o_t[:, None] * (H * K) + o_k[None, :], mask=m_tk, other=0.0)
    b_vn = tl.load(vn + (bos * H + i_h) * V + o_t[:, None] * (H * V) + o_v[None, :], mask=m_tv, other=0.0)
    p_h = h + ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V + o_k[:, None] * V + o_v[None, :]
    b_h = tl.load(p_h, mask=m_k[:, None] & m_v[None, :], other=0.0)
    b_p = tl.dot(b_q, tl.trans(b_k), input_precision=PREC)
    b_p = tl.where(o_c[:, None] >= o_c[None, :], b_p, 0.0).to(dt)
    b_o = tl.dot(b_q, b_h, input_precision=PREC)
    b_o = tl.dot(b_p, b_vn, b_o, input_precision=PREC)
    p_o = o + (bos * H + i_h) * V + o_t[:, None] * (H * V) + o_v[None, :]
    tl.store(p_o, (b_o * scale).to(o.dtype.element_ty), mask=m_tv)


# ----------------------------------------------------------------------------------------------------------------
# backward


_DV_LOCAL_CONFIGS = [triton.Config({"BV": bv}, num_warps=4, num_stages=2) for bv in (64, 32)]


@autotune(_DV_LOCAL_CONFIGS, key=["H", "K", "V", "BT"])
@triton.jit(do_not_specialize=["T"])
def _bwd_dv_local_kernel(
    q, k, do, dvl, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    PREC: tl.constexpr,
):  # fmt: skip
    """dvl = scale causal(Q K^T)^T dO, the part of dU' that does not wait for the state (unfused backward)."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos = i_b.to(tl.int64) * T
    o_c = tl.arange(0, BT)
    o_t = i_t * BT + o_c
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_t, m_k, m_v = o_t < T, o_k < K, o_v < V
    m_tk = m_t[:, None] & m_k[None, :]
    m_tv = m_t[:, None] & m_v[None, :]
    dt = k.dtype.element_ty

    b_q = tl.load(q + (bos * H + i_h) * K + o_t[:, None] * (H * K) + o_k[None, :], mask=m_tk, other=0.0)
    b_k = tl.load(k + (bos * H + i_h) * K + o_t[:, None] * (H * K) + o_k[None, :], mask=m_tk, other=0.0)
    b_do = tl.load(do + (bos * H + i_h) * V + o_t[:, None] * (H * V) + o_v[None, :], mask=m_tv, other=0.0)
    # causal(Q K^T)^T = causal^T(K Q^T)
    b_pt = tl.dot(b_k, tl.trans(b_q), input_precision=PREC)
    b_pt = tl.where(o_c[:, None] <= o_c[None, :], b_pt, 0.0).to(dt)
    b_dv = tl.dot(b_pt, b_do.to(dt), input_precision=PREC) * scale
    tl.store(dvl + (bos * H + i_h) * V + o_t[:, None] * (H * V) + o_v[None, :], b_dv, mask=m_tv)


_BWD_STATE_CONFIGS = _STATE_CONFIGS


@autotune(_BWD_STATE_CONFIGS, key=["NBH", "H", "K", "V", "BT", "FUSE_DV"])
@triton.jit(do_not_specialize=["T", "NBH"])
def _bwd_state_kernel(
    q, k, w, do, dvl, dht, dh, dvn, dh0, scale, T, NBH,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr, FUSE_DV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos = i_b.to(tl.int64) * T
    NT = tl.cdiv(T, BT)
    o_c = tl.arange(0, BT)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    dt = k.dtype.element_ty

    q += (bos * H + i_h) * K
    k += (bos * H + i_h) * K
    w += (bos * H + i_h) * K
    do += (bos * H + i_h) * V
    if not FUSE_DV:
        dvl += (bos * H + i_h) * V
    dvn += (bos * H + i_h) * V
    dh += (((i_b.to(tl.int64) + 1) * NT - 1) * H + i_h) * K * V  # the last chunk's; the loop walks back
    p_s = o_k[:, None] * V + o_v[None, :]

    b_ds = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_DHT:
        b_ds += tl.load(dht + i_bh.to(tl.int64) * K * V + p_s, mask=m_kv, other=0.0).to(tl.float32)
    for i_r in range(NT):
        i_t = NT - 1 - i_r
        o_t = i_t * BT + o_c
        m_t = o_t < T
        m_tk = m_t[:, None] & m_k[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        b_q = tl.load(q + o_t[:, None] * (H * K) + o_k[None, :], mask=m_tk, other=0.0)
        b_k = tl.load(k + o_t[:, None] * (H * K) + o_k[None, :], mask=m_tk, other=0.0)
        b_w = tl.load(w + o_t[:, None] * (H * K) + o_k[None, :], mask=m_tk, other=0.0)
        b_do = tl.load(do + o_t[:, None] * (H * V) + o_v[None, :], mask=m_tv, other=0.0).to(dt)
        b_dsd = b_ds.to(dt)
        tl.store(dh + p_s, b_dsd, mask=m_kv)
        dh -= H * K * V
        if FUSE_DV:
            b_pt = tl.dot(b_k, tl.trans(b_q), input_precision=PREC)
            b_pt = tl.where(o_c[:, None] <= o_c[None, :], b_pt, 0.0).to(dt)
            b_dv = tl.dot(b_pt, b_do, input_precision=PREC) * scale
        else:
            b_dv = tl.load(dvl + o_t[:, None] * (H * V) + o_v[None, :], mask=m_tv, other=0.0)
        b_dv = tl.dot(b_k, b_dsd, b_dv, input_precision=PREC)
        b_dvd = b_dv.to(dt)
        tl.store(dvn + o_t[:, None] * (H * V) + o_v[None, :], b_dvd, mask=m_tv)
        b_ds += tl.dot(tl.trans(b_q), b_do, input_precision=PREC) * scale
        b_ds -= tl.dot(tl.trans(b_w), b_dvd, input_precision=PREC)
    if STORE_DH0:
        tl.store(dh0 + i_bh.to(tl.int64) * K * V + p_s, b_ds, mask=m_kv)


_GRADS_CONFIGS = [triton.Config({}, num_warps=nw, num_stages=1) for nw in (4, 8)]


@autotune(_GRADS_CONFIGS, key=["H", "K", "V", "BT"])
@triton.jit(do_not_specialize=["T"])
def _bwd_grads_kernel(
    q, k, v, beta, tm, h, dh, vn, dvn, do, dq, dk, dv, dbeta, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    PREC: tl.constexpr, TPREC: tl.constexpr,
):  # fmt: skip
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos = i_b.to(tl.int64) * T
    NT = tl.cdiv(T, BT)
    o_c = tl.arange(0, BT)
    o_t = i_t * BT + o_c
    o_k = tl.arange(0, BK)
    m_t, m_k = o_t < T, o_k < K
    m_tk = m_t[:, None] & m_k[None, :]
    dt = k.dtype.element_ty

    p_qk = (bos * H + i_h) * K + o_t[:, None] * (H * K) + o_k[None, :]
    b_q = tl.load(q + p_qk, mask=m_tk, other=0.0)
    b_k = tl.load(k + p_qk, mask=m_tk, other=0.0)
    b_beta = tl.load(beta + (bos + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
    b_tm = tl.load(tm + (bos * H + i_h) * BT + o_t[:, None] * (H * BT) + o_c[None, :], mask=m_t[:, None], other=0.0)
    p_hk = ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V + o_k[:, None] * V

    b_dq = tl.zeros([BT, BK], dtype=tl.float32)
    b_dk = tl.zeros([BT, BK], dtype=tl.float32)
    b_dw = tl.zeros([BT, BK], dtype=tl.float32)  # minus the gradient of W
    b_dp = tl.zeros([BT, BT], dtype=tl.float32)
    b_dtm = tl.zeros([BT, BT], dtype=tl.float32)
    b_db = tl.zeros([BT], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        m_tv = m_t[:, None] & m_v[None, :]
        p_tv = (bos * H + i_h) * V + o_t[:, None] * (H * V) + o_v[None, :]
        b_do = tl.load(do + p_tv, mask=m_tv, other=0.0).to(dt)
        b_vn = tl.load(vn + p_tv, mask=m_tv, other=0.0)
        b_dvn = tl.load(dvn + p_tv, mask=m_tv, other=0.0)
        b_v = tl.load(v + p_tv, mask=m_tv, other=0.0).to(tl.float32)
        b_h = tl.load(h + p_hk + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0.0)
        b_dh = tl.load(dh + p_hk + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0.0)
        b_dq = tl.dot(b_do, tl.trans(b_h), b_dq, input_precision=PREC)
        b_dk = tl.dot(b_vn, tl.trans(b_dh), b_dk, input_precision=PREC)
        b_dw = tl.dot(b_dvn, tl.trans(b_h), b_dw, input_precision=PREC)
        b_dp = tl.dot(b_do, tl.trans(b_vn), b_dp, input_precision=PREC)
        # U = Tm diag(beta) V: dTm += dU (beta V)^T, d(beta V) = Tm^T dU
        b_dvnf = b_dvn.to(tl.float32)
        b_dtm = tl.dot(b_dvnf, tl.trans(b_v * b_beta[:, None]), b_dtm, input_precision=TPREC)
        b_dvb = tl.dot(tl.trans(b_tm), b_dvnf, input_precision=TPREC)
        tl.store(dv + p_tv, (b_dvb * b_beta[:, None]).to(dv.dtype.element_ty), mask=m_tv)
        b_db += tl.sum(b_dvb * b_v, 1)

    # O = scale (Q S + causal(Q K^T) U')
    b_dp = tl.where(o_c[:, None] >= o_c[None, :], b_dp * scale, 0.0).to(dt)
    b_dq = b_dq * scale
    b_dq = tl.dot(b_dp, b_k, b_dq, input_precision=PREC)
    b_dk = tl.dot(tl.trans(b_dp), b_q, b_dk, input_precision=PREC)
    # W = Tm diag(beta) K, with dW = -b_dw
    b_kf = b_k.to(tl.float32)
    b_kb = b_kf * b_beta[:, None]
    b_dtm -= tl.dot(b_dw, tl.trans(b_kb), input_precision=TPREC)
    b_dkb = -tl.dot(tl.trans(b_tm), b_dw, input_precision=TPREC)
    b_dk += b_dkb * b_beta[:, None]
    b_db += tl.sum(b_dkb * b_kf, 1)
    # Tm = (I + A)^{-1}: dA = -Tm^T dTm Tm^T on the strictly lower triangle
    b_da = tl.dot(b_dtm, tl.trans(b_tm), input_precision=TPREC)
    b_da = -tl.dot(tl.trans(b_tm), b_da, input_precision=TPREC)
    b_da = tl.where(o_c[:, None] > o_c[None, :], b_da, 0.0)
    # A = strict_tril(diag(beta) K K^T)
    b_kk = tl.dot(b_k, tl.trans(b_k), input_precision=PREC)
    b_db += tl.sum(b_da * b_kk, 1)
    b_dk = tl.dot(b_da * b_beta[:, None], b_kf, b_dk, input_precision=TPREC)
    b_dk = tl.dot(tl.trans(b_da), b_kb, b_dk, input_precision=TPREC)

    tl.store(dq + p_qk, b_dq.to(dq.dtype.element_ty), mask=m_tk)
    tl.store(dk + p_qk, b_dk.to(dk.dtype.element_ty), mask=m_tk)
    tl.store(dbeta + (bos + o_t) * H + i_h, b_db, mask=m_t)


@autotune(_GRADS_CONFIGS, key=["H", "K", "V", "BT"])
@triton.jit(do_not_specialize=["T"])
def _bwd_grads_kblock_kernel(
    q, k, v, beta, tm, h, dh, vn, dvn, do, dq, dk, dv, dbeta, scale, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BKF: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, PREC: tl.constexpr, TPREC: tl.constexpr,
):  # fmt: skip
    """`_bwd_grads_kernel` for wide keys, with fewer values live: first the C x C gradients (dP, dTm, hence dA)
    over blocks of V, then dq and dk one block of K columns at a time. dTm = dU' (beta (V - K S))^T covers both
    dW (beta K)^T and dU (beta V)^T, since dW = -dU' S^T and dU = dU'."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos = i_b.to(tl.int64) * T
    NT = tl.cdiv(T, BT)
    o_c = tl.arange(0, BT)
    o_t = i_t * BT + o_c
    m_t = o_t < T
    dt = k.dtype.element_ty

    b_beta = tl.load(beta + (bos + o_t) * H + i_h, mask=m_t, other=0.0).to(tl.float32)
    b_tm = tl.load(tm + (bos * H + i_h) * BT + o_t[:, None] * (H * BT) + o_c[None, :], mask=m_t[:, None], other=0.0)
    o_kf = tl.arange(0, BKF)
    m_kf = o_kf < K
    b_kfull = tl.load(
        k + (bos * H + i_h) * K + o_t[:, None] * (H * K) + o_kf[None, :], mask=m_t[:, None] & m_kf[None, :], other=0.0
    )
    h += ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V
    dh += ((i_b.to(tl.int64) * NT + i_t) * H + i_h) * K * V

    # dP = dO U'^T, dTm = dU' (beta (V - K S))^T, dv = beta Tm^T dU'
    b_dp = tl.zeros([BT, BT], dtype=tl.float32)
    b_dtm = tl.zeros([BT, BT], dtype=tl.float32)
    b_db = tl.zeros([BT], dtype=tl.float32)
    for i_v in range(tl.cdiv(V, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        m_tv = m_t[:, None] & m_v[None, :]
        p_tv = (bos * H + i_h) * V + o_t[:, None] * (H * V) + o_v[None, :]
        b_do = tl.load(do + p_tv, mask=m_tv, other=0.0).to(dt)
        b_vn = tl.load(vn + p_tv, mask=m_tv, other=0.0)
        b_dvnf = tl.load(dvn + p_tv, mask=m_tv, other=0.0).to(tl.float32)
        b_v = tl.load(v + p_tv, mask=m_tv, other=0.0).to(tl.float32)
        b_h = tl.load(h + o_kf[:, None] * V + o_v[None, :], mask=m_kf[:, None] & m_v[None, :], other=0.0)
        b_dp = tl.dot(b_do, tl.trans(b_vn), b_dp, input_precision=PREC)
        b_y = (b_v - tl.dot(b_kfull, b_h, input_precision=PREC)) * b_beta[:, None]
        b_dtm = tl.dot(b_dvnf, tl.trans(b_y), b_dtm, input_precision=TPREC)
        b_dvb = tl.dot(tl.trans(b_tm), b_dvnf, input_precision=TPREC)
        tl.store(dv + p_tv, (b_dvb * b_beta[:, None]).to(dv.dtype.element_ty), mask=m_tv)
        b_db += tl.sum(b_dvb * b_v, 1)
    b_dp = tl.where(o_c[:, None] >= o_c[None, :], b_dp * scale, 0.0).to(dt)
    b_da = tl.dot(b_dtm, tl.trans(b_tm), input_precision=TPREC)
    b_da = -tl.dot(tl.trans(b_tm), b_da, input_precision=TPREC)
    b_da = tl.where(o_c[:, None] > o_c[None, :], b_da, 0.0)

    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        m_tk = m_t[:, None] & m_k[None, :]
        p_qk = (bos * H + i_h) * K + o_t[:, None] * (H * K) + o_k[None, :]
        b_q = tl.load(q + p_qk, mask=m_tk, other=0.0)
        b_k = tl.load(k + p_qk, mask=m_tk, other=0.0)
        b_dq = tl.zeros([BT, BK], dtype=tl.float32)
        b_dk = tl.zeros([BT, BK], dtype=tl.float32)
        b_dw = tl.zeros([BT, BK], dtype=tl.float32)  # minus the gradient of W's columns
        for i_v in range(tl.cdiv(V, BV)):
            o_v = i_v * BV + tl.arange(0, BV)
            m_v = o_v < V
            m_tv = m_t[:, None] & m_v[None, :]
            p_tv = (bos * H + i_h) * V + o_t[:, None] * (H * V) + o_v[None, :]
            b_do = tl.load(do + p_tv, mask=m_tv, other=0.0).to(dt)
            b_vn = tl.load(vn + p_tv, mask=m_tv, other=0.0)
            b_dvn = tl.load(dvn + p_tv, mask=m_tv, other=0.0)
            m_kv = m_k[:, None] & m_v[None, :]
            b_h = tl.load(h + o_k[:, None] * V + o_v[None, :], mask=m_kv, other=0.0)
            b_dh = tl.load(dh + o_k[:, None] * V + o_v[None, :], mask=m_kv, other=0.0)
            b_dq = tl.dot(b_do, tl.trans(b_h), b_dq, input_precision=PREC)
            b_dk = tl.dot(b_vn, tl.trans(b_dh), b_dk, input_precision=PREC)
            b_dw = tl.dot(b_dvn, tl.trans(b_h), b_dw, input_precision=PREC)
        b_dq = tl.dot(b_dp, b_k, b_dq * scale, input_precision=PREC)
        tl.store(dq + p_qk, b_dq.to(dq.dtype.element_ty), mask=m_tk)
        b_dk = tl.dot(tl.trans(b_dp), b_q, b_dk, input_precision=PREC)
        b_kf = b_k.to(tl.float32)
        b_kb = b_kf * b_beta[:, None]
        b_dkb = -tl.dot(tl.trans(b_tm), b_dw, input_precision=TPREC)
        b_dk += b_dkb * b_beta[:, None]
        b_db += tl.sum(b_dkb * b_kf, 1)
        b_db += tl.sum(b_da * tl.dot(b_k, tl.trans(b_k), input_precision=PREC), 1)
        b_dk = tl.dot(b_da * b_beta[:, None], b_kf, b_dk, input_precision=TPREC)
        b_dk = tl.dot(tl.trans(b_da), b_kb, b_dk, input_precision=TPREC)
        tl.store(dk + p_qk, b_dk.to(dk.dtype.element_ty), mask=m_tk)
    tl.store(dbeta + (bos + o_t) * H + i_h, b_db, mask=m_t)


# ----------------------------------------------------------------------------------------------------------------
# launchers


def _precisions(dtype: torch.dtype) -> tuple[str, str]:
    """(precision of the input-dtype dots, precision of the products with Tm)."""
    return ("ieee", "ieee") if dtype == torch.float32 else ("tf32", "tf32")


def _block(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


# The launchers' choices between equivalent forms, each measured on an H100 at the issue's three shapes
# (benchmarks/RESULTS.md, "DeltaNet chunk kernel"). None: the launcher decides; True/False force a form.
FUSE_OUTPUT: bool | None = None  # output inside the forward state loop (else `_fwd_output_kernel` after it)
FUSE_DV: bool | None = None  # causal(QK^T)^T dO inside the reverse state loop (else `_bwd_dv_local_kernel`)
REG_BLOCKS: bool | None = None  # the inverse in 16 x 16 register tiles (else built in place in tm)
REG_SUBST: bool | None = None  # in tm: the diagonal blocks' substitution in registers (else rows re-read from memory)
KBLOCK_GRADS: bool | None = None  # the gradient kernel one block of 64 key columns at a time (else all of K)


def _fused_output() -> bool:
    return FUSE_OUTPUT if FUSE_OUTPUT is not None else True  # faster at all three shapes


def _fused_dv() -> bool:
    return FUSE_DV if FUSE_DV is not None else True  # faster at all three shapes


def _register_blocks(chunk_size: int) -> bool:
    # 424 vs 519 us at K = 128, 322 vs 333 at K = 64 (the kernel alone, H200); above 64 the 36 tiles of a chunk
    # of 128 would likely spill (not measured)
    return REG_BLOCKS if REG_BLOCKS is not None else chunk_size <= 64


def _register_substitution(k_dim: int) -> bool:
    return REG_SUBST if REG_SUBST is not None else k_dim > 64  # 426 vs 503 us at K = 128, 298 vs 269 at K = 64


def _kblocked_grads(k_dim: int) -> bool:
    return KBLOCK_GRADS if KBLOCK_GRADS is not None else k_dim > 64  # 0.80 vs 1.14 ms at K = 128


def chunk_delta_rule_fwd(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, scale: float, initial_state: Tensor | None,
    output_final_state: bool, chunk_size: int, save_for_backward: bool,
) -> tuple[Tensor, Tensor | None, tuple[Tensor, ...]]:  # fmt: skip
    """(o, final state or None, tensors the backward needs: tm, w, h, vn)."""
    b, t, nh, dk = k.shape
    dv = v.shape[-1]
    bt, bk, bv_full = chunk_size, _block(dk), _block(dv)
    nt = triton.cdiv(t, bt)
    prec, tprec = _precisions(k.dtype)
    w = torch.empty_like(k)
    u = torch.empty_like(v)
    tm = torch.empty(b, t, nh, bt, device=k.device, dtype=torch.float32)
    _fwd_prepare_kernel[(nt, b * nh)](
        k, v, beta, w, u, tm, t, H=nh, K=dk, V=dv, BT=bt, BK=bk, BV=min(bv_full, 64), PREC=prec, TPREC=tprec,
        REG_BLOCKS=_register_blocks(bt), REG_SUBST=_register_substitution(dk), **first(_PREPARE_CONFIGS),
    )  # fmt: skip

    fuse_o = _fused_output()
    store_h = save_for_backward or not fuse_o
    o = torch.empty_like(v)
    h = k.new_empty(b, nt, nh, dk, dv) if store_h else None
    vn = torch.empty_like(v) if store_h else None
    ht = k.new_empty(b, nh, dk, dv, dtype=torch.float32) if output_final_state else None
    h0 = initial_state.contiguous() if initial_state is not None else None
    meta = first(_STATE_CONFIGS)
    grid = lambda m: (triton.cdiv(dv, m["BV"]), b * nh)  # noqa: E731
    _fwd_state_kernel[grid](
        q, k, w, u, h0, o, h, vn, ht, scale, t, b * nh, H=nh, K=dk, V=dv, BT=bt, BK=bk,
        USE_H0=h0 is not None, STORE_H=store_h, STORE_VN=store_h, STORE_HT=output_final_state,
        FUSE_O=fuse_o, PREC=prec, **meta,
    )  # fmt: skip
    if not fuse_o:
        grid = lambda m: (triton.cdiv(dv, m["BV"]), nt, b * nh)  # noqa: E731
        _fwd_output_kernel[grid](
            q, k, vn, h, o, scale, t, H=nh, K=dk, V=dv, BT=bt, BK=bk, PREC=prec, **first(_OUTPUT_CONFIGS)
        )
    return o, ht, (tm, w, h, vn)


def chunk_delta_rule_bwd(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, tm: Tensor, w: Tensor, h: Tensor, vn: Tensor, scale: float,
    do: Tensor, dht: Tensor | None, need_dh0: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:  # fmt: skip
    b, t, nh, dk = k.shape
    dv = v.shape[-1]
    bt = tm.shape[-1]
    bk, bv_full = _block(dk), _block(dv)
    nt = triton.cdiv(t, bt)
    prec, tprec = _precisions(k.dtype)

    fuse_dv = _fused_dv()
    dvl = None
    if not fuse_dv:
        dvl = torch.empty_like(v, dtype=torch.float32)
        grid = lambda m: (triton.cdiv(dv, m["BV"]), nt, b * nh)  # noqa: E731
        _bwd_dv_local_kernel[grid](
            q, k, do, dvl, scale, t, H=nh, K=dk, V=dv, BT=bt, BK=bk, PREC=prec, **first(_DV_LOCAL_CONFIGS)
        )
    dh = k.new_empty(b, nt, nh, dk, dv)
    dvn = torch.empty_like(v)
    dh0 = k.new_empty(b, nh, dk, dv, dtype=torch.float32) if need_dh0 else None
    grid = lambda m: (triton.cdiv(dv, m["BV"]), b * nh)  # noqa: E731
    _bwd_state_kernel[grid](
        q, k, w, do, dvl, dht, dh, dvn, dh0, scale, t, b * nh, H=nh, K=dk, V=dv, BT=bt, BK=bk,
        USE_DHT=dht is not None, STORE_DH0=need_dh0, FUSE_DV=fuse_dv, PREC=prec, **first(_BWD_STATE_CONFIGS),
    )  # fmt: skip

    dq, dk_, dv_ = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dbeta = torch.empty(b, t, nh, device=k.device, dtype=torch.float32)
    if _kblocked_grads(dk):
        _bwd_grads_kblock_kernel[(nt, b * nh)](
            q, k, v, beta, tm, h, dh, vn, dvn, do, dq, dk_, dv_, dbeta, scale, t, H=nh, K=dk, V=dv, BT=bt,
            BKF=bk, BK=min(bk, 64), BV=min(bv_full, 64), PREC=prec, TPREC=tprec, **first(_GRADS_CONFIGS),
        )  # fmt: skip
    else:
        _bwd_grads_kernel[(nt, b * nh)](
            q, k, v, beta, tm, h, dh, vn, dvn, do, dq, dk_, dv_, dbeta, scale, t,
            H=nh, K=dk, V=dv, BT=bt, BK=bk, BV=min(bv_full, 64), PREC=prec, TPREC=tprec, **first(_GRADS_CONFIGS),
        )  # fmt: skip
    return dq, dk_, dv_, dbeta, dh0


@torch.library.custom_op("archsearch::chunk_delta_rule", mutates_args=())
def _chunk_op(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, scale: float, initial_state: Tensor | None,
    output_final_state: bool, chunk_size: int, save_for_backward: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(o, final state, and what the backward reuses: tm, w, h, vn); a tensor not asked for comes back empty."""
    # contiguous inside the op too: under torch.compile, Inductor may hand the op padded strides
    q, k, v, beta = (x.contiguous() for x in (q, k, v, beta))
    o, ht, (tm, w, h, vn) = chunk_delta_rule_fwd(
        q, k, v, beta, scale, initial_state, output_final_state, chunk_size, save_for_backward
    )
    def given(x: Tensor | None) -> Tensor:
        return k.new_empty(0) if x is None else x

    return o, given(ht), tm, w, given(h), given(vn)


@_chunk_op.register_fake
def _(q, k, v, beta, scale, initial_state, output_final_state, chunk_size, save_for_backward):
    b, t, nh, dk = k.shape
    dv, nt = v.shape[-1], -(-t // chunk_size)
    store_h = save_for_backward or not _fused_output()
    return (
        v.new_empty(v.shape),
        k.new_empty(b, nh, dk, dv, dtype=torch.float32) if output_final_state else k.new_empty(0),
        k.new_empty(b, t, nh, chunk_size, dtype=torch.float32),
        k.new_empty(k.shape),
        k.new_empty(b, nt, nh, dk, dv) if store_h else k.new_empty(0),
        v.new_empty(v.shape) if store_h else k.new_empty(0),
    )


@torch.library.custom_op("archsearch::chunk_delta_rule_backward", mutates_args=())
def _chunk_backward_op(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor, tm: Tensor, w: Tensor, h: Tensor, vn: Tensor, scale: float,
    do: Tensor, dht: Tensor | None, need_dh0: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """(dq, dk, dv, dbeta in float32, dh0 in float32 or empty)."""
    q, k, v, beta, tm, w, h, vn = (x.contiguous() for x in (q, k, v, beta, tm, w, h, vn))
    dq, dk, dv, dbeta, dh0 = chunk_delta_rule_bwd(
        q, k, v, beta, tm, w, h, vn, scale, do.contiguous(), None if dht is None else dht.contiguous(), need_dh0
    )
    return dq, dk, dv, dbeta, k.new_empty(0) if dh0 is None else dh0


@_chunk_backward_op.register_fake
def _(q, k, v, beta, tm, w, h, vn, scale, do, dht, need_dh0):
    b, _, nh, dk = k.shape
    dh0 = k.new_empty(b, nh, dk, v.shape[-1], dtype=torch.float32) if need_dh0 else k.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), beta.new_empty(beta.shape, dtype=torch.float32), dh0


def _chunk_setup(ctx, inputs, output) -> None:
    q, k, v, beta, scale, initial_state, output_final_state, _, _ = inputs
    ctx.save_for_backward(q, k, v, beta, *output[2:])
    ctx.scale, ctx.output_final_state = scale, output_final_state
    ctx.beta_dtype = beta.dtype
    ctx.h0_dtype = initial_state.dtype if initial_state is not None else None


def _chunk_backward(ctx, do: Tensor, dht: Tensor | None, *_unused: Tensor):
    q, k, v, beta, tm, w, h, vn = ctx.saved_tensors
    dht = dht if ctx.output_final_state else None
    dq, dk, dv, dbeta, dh0 = _chunk_backward_op(
        q, k, v, beta, tm, w, h, vn, ctx.scale, do, dht, ctx.h0_dtype is not None
    )
    dh0 = dh0.to(ctx.h0_dtype) if ctx.h0_dtype is not None else None
    return dq, dk, dv, dbeta.to(ctx.beta_dtype), None, dh0, None, None, None


_chunk_op.register_autograd(_chunk_backward, setup_context=_chunk_setup)


def chunk_delta_rule_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor | None]:
    """The delta rule through the Triton kernels: (o in the dtype of q, final state in float32 or None).

    A `torch.library` op (archsearch::chunk_delta_rule), so `torch.compile` keeps it in one graph."""
    if chunk_size not in CHUNK_SIZES:
        raise ValueError(f"chunk_size must be one of {CHUNK_SIZES}, got {chunk_size}")
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        raise ValueError(f"head dimensions above {MAX_HEAD_DIM} are not supported by the Triton kernel")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    # contiguous here, so the tensors saved for the backward are the ones the kernels read
    q, beta = q.contiguous(), beta.contiguous()
    k, v = k.to(q.dtype).contiguous(), v.to(q.dtype).contiguous()
    initial_state = initial_state.contiguous() if initial_state is not None else None
    training = torch.is_grad_enabled() and any(
        x is not None and x.requires_grad for x in (q, k, v, beta, initial_state)
    )
    o, ht, *_ = _chunk_op(q, k, v, beta, scale, initial_state, output_final_state, chunk_size, training)
    return o, ht if output_final_state else None


def supports(q: Tensor, v: Tensor, chunk_size: int) -> bool:
    """Whether the Triton kernel takes these inputs (otherwise the dispatcher uses the reference)."""
    return (
        chunk_size in CHUNK_SIZES
        and q.shape[-1] <= MAX_HEAD_DIM
        and v.shape[-1] <= MAX_HEAD_DIM
        and q.shape[1] > 0
        and q.dtype in (torch.float32, torch.float16, torch.bfloat16)
    )
