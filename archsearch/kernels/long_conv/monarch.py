"""Causal long convolution as one fused Triton kernel: FFT, filter product and inverse FFT on tensor cores.

Each sequence is convolved through a length-N DFT (N a power of two >= 2T, so the circular wrap never reaches
[0, T)) written in the Monarch / four-step form that FlashFFTConv uses: with n = N2 n1 + n2 and k = k1 + N1 k2,

    X[k1 + N1 k2] = sum_n2 F2[n2, k2] W_N^(k1 n2) sum_n1 F1[k1, n1] x[N2 n1 + n2],

two small DFT matrix products with a twiddle in between. The sequence lives in registers as an [N1, N2] tile, the
spectrum stays in that (digit-reversed) layout, is multiplied by the filter's spectrum in the same layout, and the
inverse runs the steps backwards. Nothing but the input and the output touches device memory.

Two real sequences ride in one complex one: the filter is real, so (u_a + i u_b) * h = u_a * h + i (u_b * h), and
batch elements are convolved in pairs. The backward pass runs the same transforms: du = h (*) dy (correlation, the
filter's spectrum conjugated) and dh = sum over the batch of dy (*) u, accumulated per channel in the frequency
domain (the cross terms of the pairing land in the imaginary part, which is dropped).

The DFT products take fp16 operands (fp32 accumulation) by default: each sequence (and each gradient) is scaled
to a maximum of 1 first, so neither its range nor a gradient's small magnitude is lost, and the matrices are
unitary, so the intermediate values stay near the input's. `F16=False` runs the products in tf32 instead.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_FFT = 8192  # the largest transform held in one program's registers: T <= MAX_FFT // 2
MIN_FFT = 1024  # N1 >= 32, so the half-tile products have K >= 16, tl.dot's minimum


def fft_size(t: int) -> int:
    """The transform length for T tokens: the power of two >= 2T, at least MIN_FFT."""
    return max(MIN_FFT, 1 << (2 * t - 1).bit_length())


def supports(t: int) -> bool:
    return fft_size(t) <= MAX_FFT


def plan(n: int, device: torch.device, f16: bool) -> tuple[Tensor, ...]:
    """(F1 re, F1 im, F2 re, F2 im, twiddle re, twiddle im) for an N-point transform on device: F1 is N1 x N1, F2
    N2 x N2 and the twiddles N1 x N2, with N = N1 N2 (see `plan_sizes`).

    The DFT matrices come in the products' operand type (fp16, or fp32 for tf32), the twiddles in fp32, all built in
    real arithmetic (Inductor generates no complex code). Eager calls share one cached plan per transform. Under
    `torch.compile` the plan is built inside the graph and no cache keeps it. When the op cached its own plan, the
    first plan came from a CUDA graph tree's memory pool and the cache kept it alive. That failed the recording
    ("6 tensor(s) in the cudagraph pool not tracked as outputs"), and every H3 and Hyena model then trained without
    CUDA graphs (H200, benchmarks/RESULTS.md).
    """
    if torch.compiler.is_compiling():
        return _build_plan(n, device, f16)
    return _cached_plan(n, device, f16)


def _build_plan(n: int, device: torch.device, f16: bool) -> tuple[Tensor, ...]:
    n1 = 1 << (n.bit_length() - 1) // 2
    n2 = n // n1
    operand = torch.float16 if f16 else torch.float32

    def unit_roots(rows: int, cols: int, m: int, scale: float, dtype: torch.dtype) -> list[Tensor]:
        """exp(-2 pi i r c / m) * scale at [r, c], as (real, imaginary); the product reduced mod m first, exactly."""
        r, c = torch.arange(rows, device=device), torch.arange(cols, device=device)
        angle = (torch.outer(r, c) % m).double() * (2 * math.pi / m)
        return [(torch.cos(angle) * scale).to(dtype).contiguous(), (-torch.sin(angle) * scale).to(dtype).contiguous()]

    return (*unit_roots(n1, n1, n1, 1 / math.sqrt(n1), operand), *unit_roots(n2, n2, n2, 1 / math.sqrt(n2), operand),
            *unit_roots(n1, n2, n, 1.0, torch.float32))  # two unitary, symmetric DFTs, then the twiddles


@functools.lru_cache(maxsize=32)
def _cached_plan(n: int, device: torch.device, f16: bool) -> tuple[Tensor, ...]:
    # built outside inference mode: a cached inference tensor could not be saved for a later backward
    with torch.inference_mode(False):
        return _build_plan(n, device, f16)


def plan_sizes(mats: Sequence[Tensor]) -> tuple[int, int]:
    """(N1, N2) of a `plan`."""
    return mats[0].shape[0], mats[2].shape[0]


def filter_spectrum(h: Tensor, t: int, n: int, n1: int, n2: int) -> tuple[Tensor, Tensor]:
    """The N-point DFT of each filter's first t taps, in the kernel's [C, N1, N2] layout (bin k1 + N1 k2 at [k1, k2])."""
    spec = torch.fft.fft(h[:, :t].float(), n=n).view(-1, n2, n1).transpose(1, 2)
    return spec.real.contiguous(), spec.imag.contiguous()


@triton.jit
def _dot(a, b, F16: tl.constexpr):
    if F16:
        return tl.dot(a.to(tl.float16), b.to(tl.float16))
    else:
        return tl.dot(a, b, input_precision="tf32")


@triton.jit
def _cdot(ar, ai, br, bi, F16: tl.constexpr):
    """(ar + i ai) @ (br + i bi) as four real products."""
    return _dot(ar, br, F16) - _dot(ai, bi, F16), _dot(ar, bi, F16) + _dot(ai, br, F16)


@triton.jit
def _f1_left(f1r_ptr, f1i_ptr, N1: tl.constexpr):
    """F1[:, :N1/2]: the DFT columns that meet the unpadded half of the sequence."""
    at = tl.arange(0, N1)[:, None] * N1 + tl.arange(0, N1 // 2)[None, :]
    return tl.load(f1r_ptr + at), tl.load(f1i_ptr + at)


@triton.jit
def _f1_conj_top(f1r_ptr, f1i_ptr, N1: tl.constexpr):
    """conj(F1)[:N1/2, :]: the inverse DFT rows that land in the first half (the output)."""
    at = tl.arange(0, N1 // 2)[:, None] * N1 + tl.arange(0, N1)[None, :]
    return tl.load(f1r_ptr + at), -tl.load(f1i_ptr + at)


@triton.jit
def _square(re_ptr, im_ptr, ROWS: tl.constexpr, COLS: tl.constexpr):
    at = tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :]
    return tl.load(re_ptr + at), tl.load(im_ptr + at)


@triton.jit
def _fft(
    xr, xi, f1r, f1i, twr, twi, f2r, f2i, N1: tl.constexpr, N2: tl.constexpr, F16: tl.constexpr, RELOAD: tl.constexpr
):
    """Unitary DFT of the sequence in rows [0, N1/2) of the [N1, N2] tile (the rest is the zero padding).

    The plan arguments are tiles, or with RELOAD pointers to them, loaded where they are used (short live ranges,
    fewer registers; the loads hit the cache)."""
    if RELOAD:
        f1r, f1i = _f1_left(f1r, f1i, N1)
    ar, ai = _cdot(f1r, f1i, xr, xi, F16)  # [N1, N1/2] @ [N1/2, N2]
    if RELOAD:
        twr, twi = _square(twr, twi, N1, N2)
    ar, ai = ar * twr - ai * twi, ar * twi + ai * twr
    if RELOAD:
        f2r, f2i = _square(f2r, f2i, N2, N2)
    return _cdot(ar, ai, f2r, f2i, F16)  # [N1, N2] @ [N2, N2]


@triton.jit
def _ifft(
    zr, zi, g1r, g1i, twr, twi, f2r, f2i, N1: tl.constexpr, N2: tl.constexpr, F16: tl.constexpr, RELOAD: tl.constexpr
):
    """Unitary inverse DFT, rows [0, N1/2) of the result only; g1 = conj(F1)[:N1/2] (with RELOAD: F1's pointers)."""
    if RELOAD:
        f2r, f2i = _square(f2r, f2i, N2, N2)
    br, bi = _cdot(zr, zi, f2r, -f2i, F16)
    if RELOAD:
        twr, twi = _square(twr, twi, N1, N2)
    br, bi = br * twr + bi * twi, bi * twr - br * twi
    if RELOAD:
        g1r, g1i = _f1_conj_top(g1r, g1i, N1)
    return _cdot(g1r, g1i, br, bi, F16)  # [N1/2, N1] @ [N1, N2]


@triton.jit
def _plan_tiles(f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr, twi_ptr, N1: tl.constexpr, N2: tl.constexpr):
    """The plan's tiles, loaded once (without RELOAD)."""
    f1r, f1i = _f1_left(f1r_ptr, f1i_ptr, N1)
    g1r, g1i = _f1_conj_top(f1r_ptr, f1i_ptr, N1)
    f2r, f2i = _square(f2r_ptr, f2i_ptr, N2, N2)
    twr, twi = _square(twr_ptr, twi_ptr, N1, N2)
    return f1r, f1i, g1r, g1i, f2r, f2i, twr, twi


@triton.jit
def _long_conv_fwd_kernel(
    u_ptr, y_ptr, hr_ptr, hi_ptr, skip_ptr,
    f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr, twi_ptr,
    B, C, T, pairs_per_program,
    HAS_SKIP: tl.constexpr, N1: tl.constexpr, N2: tl.constexpr, F16: tl.constexpr, RELOAD: tl.constexpr,
):  # fmt: skip
    c = tl.program_id(0)
    split = tl.program_id(1)
    HALF: tl.constexpr = N1 // 2
    spec = c * (N1 * N2)
    if RELOAD:  # _fft and _ifft take the pointers and load each tile where it is used
        f1r, f1i, g1r, g1i = f1r_ptr, f1i_ptr, f1r_ptr, f1i_ptr
        f2r, f2i, twr, twi = f2r_ptr, f2i_ptr, twr_ptr, twi_ptr
    else:
        f1r, f1i, g1r, g1i, f2r, f2i, twr, twi = _plan_tiles(
            f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr, twi_ptr, N1, N2
        )
        hr, hi = _square(hr_ptr + spec, hi_ptr + spec, N1, N2)
    skip = tl.load(skip_ptr + c).to(tl.float32) if HAS_SKIP else 0.0
    n = tl.arange(0, HALF)[:, None] * N2 + tl.arange(0, N2)[None, :]  # time index of each entry of the half tile
    inside = n < T
    first = split * pairs_per_program
    for p in range(first, tl.minimum(first + pairs_per_program, (B + 1) // 2)):
        off = (2 * p * C + c).to(tl.int64) * T
        second = n < tl.where(2 * p + 1 < B, T, 0)  # the pair's second sequence, when B has one
        x0 = tl.load(u_ptr + off + n, mask=inside, other=0.0).to(tl.float32)
        x1 = tl.load(u_ptr + off + C * T + n, mask=second, other=0.0).to(tl.float32)
        scale = tl.maximum(tl.maximum(tl.max(tl.abs(x0)), tl.max(tl.abs(x1))), 1e-30)
        zr, zi = _fft(x0 / scale, x1 / scale, f1r, f1i, twr, twi, f2r, f2i, N1, N2, F16, RELOAD)
        if RELOAD:
            hr, hi = _square(hr_ptr + spec, hi_ptr + spec, N1, N2)
        zr, zi = zr * hr - zi * hi, zr * hi + zi * hr
        yr, yi = _ifft(zr, zi, g1r, g1i, twr, twi, f2r, f2i, N1, N2, F16, RELOAD)
        tl.store(y_ptr + off + n, (yr * scale + skip * x0).to(y_ptr.dtype.element_ty), mask=inside)
        tl.store(y_ptr + off + C * T + n, (yi * scale + skip * x1).to(y_ptr.dtype.element_ty), mask=second)


@triton.jit
def _long_conv_bwd_kernel(
    u_ptr, dy_ptr, du_ptr, dh_ptr, dskip_ptr, hr_ptr, hi_ptr, skip_ptr,
    f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr, twi_ptr,
    B, C, T, pairs_per_program, root_n,
    HAS_SKIP: tl.constexpr, N1: tl.constexpr, N2: tl.constexpr, F16: tl.constexpr, RELOAD: tl.constexpr,
):  # fmt: skip
    c = tl.program_id(0)
    split = tl.program_id(1)
    HALF: tl.constexpr = N1 // 2
    spec = c * (N1 * N2)
    if RELOAD:  # _fft and _ifft take the pointers and load each tile where it is used
        f1r, f1i, g1r, g1i = f1r_ptr, f1i_ptr, f1r_ptr, f1i_ptr
        f2r, f2i, twr, twi = f2r_ptr, f2i_ptr, twr_ptr, twi_ptr
    else:
        f1r, f1i, g1r, g1i, f2r, f2i, twr, twi = _plan_tiles(
            f1r_ptr, f1i_ptr, f2r_ptr, f2i_ptr, twr_ptr, twi_ptr, N1, N2
        )
        hr, hi = _square(hr_ptr + spec, hi_ptr + spec, N1, N2)
    skip = tl.load(skip_ptr + c).to(tl.float32) if HAS_SKIP else 0.0
    n = tl.arange(0, HALF)[:, None] * N2 + tl.arange(0, N2)[None, :]
    inside = n < T
    acc_r = tl.zeros((N1, N2), dtype=tl.float32)  # sum over the batch of dY conj(U), in units of 1/N
    acc_i = tl.zeros((N1, N2), dtype=tl.float32)
    dskip = tl.sum(tl.zeros((N2,), dtype=tl.float32), axis=0)
    first = split * pairs_per_program
    for p in range(first, tl.minimum(first + pairs_per_program, (B + 1) // 2)):
        off = (2 * p * C + c).to(tl.int64) * T
        second = n < tl.where(2 * p + 1 < B, T, 0)  # the pair's second sequence, when B has one
        g0 = tl.load(dy_ptr + off + n, mask=inside, other=0.0).to(tl.float32)
        g1 = tl.load(dy_ptr + off + C * T + n, mask=second, other=0.0).to(tl.float32)
        sg = tl.maximum(tl.maximum(tl.max(tl.abs(g0)), tl.max(tl.abs(g1))), 1e-30)
        wr, wi = _fft(g0 / sg, g1 / sg, f1r, f1i, twr, twi, f2r, f2i, N1, N2, F16, RELOAD)
        if RELOAD:
            hr, hi = _square(hr_ptr + spec, hi_ptr + spec, N1, N2)
        # du = h correlated with dy: the product with the conjugated filter spectrum
        er, ei = _ifft(wr * hr + wi * hi, wi * hr - wr * hi, g1r, g1i, twr, twi, f2r, f2i, N1, N2, F16, RELOAD)
        tl.store(du_ptr + off + n, (er * sg + skip * g0).to(du_ptr.dtype.element_ty), mask=inside)
        tl.store(du_ptr + off + C * T + n, (ei * sg + skip * g1).to(du_ptr.dtype.element_ty), mask=second)
        x0 = tl.load(u_ptr + off + n, mask=inside, other=0.0).to(tl.float32)
        x1 = tl.load(u_ptr + off + C * T + n, mask=second, other=0.0).to(tl.float32)
        su = tl.maximum(tl.maximum(tl.max(tl.abs(x0)), tl.max(tl.abs(x1))), 1e-30)
        ur, ui = _fft(x0 / su, x1 / su, f1r, f1i, twr, twi, f2r, f2i, N1, N2, F16, RELOAD)
        acc_r += (sg * su) * (wr * ur + wi * ui)
        acc_i += (sg * su) * (wi * ur - wr * ui)
        dskip += tl.sum(g0 * x0) + tl.sum(g1 * x1)
    scale = tl.maximum(tl.maximum(tl.max(tl.abs(acc_r)), tl.max(tl.abs(acc_i))), 1e-30)
    dh, _ = _ifft(acc_r / scale, acc_i / scale, g1r, g1i, twr, twi, f2r, f2i, N1, N2, F16, RELOAD)
    dh = dh * (scale * root_n)
    tl.store(dh_ptr + (split * C + c).to(tl.int64) * T + n, dh, mask=inside)
    tl.store(dskip_ptr + split * C + c, dskip)


def _splits(pairs: int, channels: int, device: torch.device) -> tuple[int, int]:
    """(programs per channel, pairs per program): enough programs to fill the GPU a few times over."""
    target = 4 * torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    split = max(1, min(pairs, -(-target // channels)))
    per = -(-pairs // split)
    return -(-pairs // per), per


def _launch_config(n: int) -> dict:
    """Warps, pipelining and whether the plan is reloaded per use, per transform size (benchmarks/long_conv.py)."""
    return (
        {"num_warps": 4, "num_stages": 1, "RELOAD": False}
        if n <= 4096
        else {"num_warps": 8, "num_stages": 1, "RELOAD": True}
    )


@torch.library.custom_op("archsearch::long_conv_monarch", mutates_args=())
def _monarch_op(u: Tensor, h: Tensor, skip: Tensor | None, mats: list[Tensor], f16: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(y, the filter spectrum's real and imaginary parts, which the backward reuses); `mats`: the transform's `plan`."""
    c, t = u.shape[-2:]
    x = u.reshape(-1, c, t).contiguous()
    n = fft_size(t)
    n1, n2 = plan_sizes(mats)
    hr, hi = filter_spectrum(h, t, n, n1, n2)
    skip = skip.contiguous() if skip is not None else None
    split, per = _splits((x.shape[0] + 1) // 2, c, u.device)
    y = torch.empty_like(x)
    _long_conv_fwd_kernel[(c, split)](
        x, y, hr, hi, x if skip is None else skip, *mats, x.shape[0], c, t, per,
        HAS_SKIP=skip is not None, N1=n1, N2=n2, F16=f16, **_launch_config(n),
    )  # fmt: skip
    return y.view(u.shape), hr, hi


@_monarch_op.register_fake
def _(u: Tensor, h: Tensor, skip: Tensor | None, mats: list[Tensor], f16: bool) -> tuple[Tensor, Tensor, Tensor]:
    spectrum = (h.shape[0], *plan_sizes(mats))
    return u.new_empty(u.shape), h.new_empty(spectrum, dtype=torch.float32), h.new_empty(spectrum, dtype=torch.float32)


@torch.library.custom_op("archsearch::long_conv_monarch_backward", mutates_args=())
def _monarch_backward_op(
    u: Tensor, h: Tensor, skip: Tensor | None, hr: Tensor, hi: Tensor, dy: Tensor, mats: list[Tensor], f16: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """(du, dh, dskip; dskip empty without skip)."""
    c, t = u.shape[-2:]
    x = u.reshape(-1, c, t).contiguous()
    b = x.shape[0]
    n = fft_size(t)
    n1, n2 = plan_sizes(mats)
    g = dy.reshape(b, c, t).contiguous()
    hr, hi = hr.contiguous(), hi.contiguous()
    skip = skip.contiguous() if skip is not None else None
    split, per = _splits((b + 1) // 2, c, x.device)
    du = torch.empty_like(x)
    dh = torch.empty(split, c, t, device=x.device, dtype=torch.float32)
    dskip = torch.empty(split, c, device=x.device, dtype=torch.float32)
    _long_conv_bwd_kernel[(c, split)](
        x, g, du, dh, dskip, hr, hi, x if skip is None else skip, *mats, b, c, t, per, math.sqrt(n),
        HAS_SKIP=skip is not None, N1=n1, N2=n2, F16=f16, **_launch_config(n),
    )  # fmt: skip
    dh = dh.sum(0)
    taps = h.shape[-1]
    dh = dh[:, :taps].contiguous() if taps <= t else torch.nn.functional.pad(dh, (0, taps - t))
    dskip = u.new_empty(0) if skip is None else dskip.sum(0).to(skip.dtype)
    return du.view(u.shape), dh.to(h.dtype), dskip


@_monarch_backward_op.register_fake
def _(u, h, skip, hr, hi, dy, mats, f16) -> tuple[Tensor, Tensor, Tensor]:
    return u.new_empty(u.shape), h.new_empty(h.shape), u.new_empty(0) if skip is None else skip.new_empty(skip.shape)


def _monarch_setup(ctx, inputs, output) -> None:
    u, h, skip, mats, f16 = inputs
    ctx.save_for_backward(u, h, skip, output[1], output[2], *mats)
    ctx.f16 = f16


def _monarch_backward(ctx, dy: Tensor, _dhr, _dhi):
    u, h, skip, hr, hi, *mats = ctx.saved_tensors
    du, dh, dskip = _monarch_backward_op(u, h, skip, hr, hi, dy, mats, ctx.f16)
    return du, dh, None if skip is None else dskip, [None] * len(mats), None


_monarch_op.register_autograd(_monarch_backward, setup_context=_monarch_setup)


def long_conv_monarch(u: Tensor, h: Tensor, skip: Tensor | None = None, f16: bool = True) -> Tensor:
    """`long_conv` (see `reference`) through the fused kernel; T <= MAX_FFT // 2. f16: fp16 DFT products, else tf32.

    A `torch.library` op (archsearch::long_conv_monarch), so `torch.compile` keeps it in one graph. Blocks pass u
    as a transposed view of [B, T, C]: it is made contiguous here, outside the op, where Inductor writes that layout
    from the kernel that produces u. Inside the op it is an eager strided copy, in the forward and again in the
    backward (of the saved u)."""
    if not supports(u.shape[-1]):
        raise ValueError(f"long_conv_monarch: T={u.shape[-1]} is over {MAX_FFT // 2}")
    return _monarch_op(u.contiguous(), h, skip, list(plan(fft_size(u.shape[-1]), u.device, f16)), f16)[0]
