"""Causal long convolution through cuFFT, with the passes around the transforms fused in Triton: for lengths whose
transform does not fit one program's registers (see `monarch`).

Forward: one kernel scales each sequence (and each filter) to a maximum of 1 and writes it zero-padded to N (a power
of two >= 2T) in the transform's dtype; rfft; one kernel multiplies by the filter's spectrum (computed once per call
and shared by the batch); irfft; one kernel takes the first T samples, undoes the scale and adds the skip term. Backward does
the same for du with the conjugated filter spectrum, and in the product kernel also sums dY conj(U) over the batch,
so dh (and dskip, its lag-0 value) costs one transform per channel rather than one per sequence.

`half=True` runs every transform in fp16 (cuFFT's half precision: power-of-two lengths, CUDA only), the products in
fp32; the scaling keeps every value of an unnormalised transform under T, inside fp16's range for T <= 32768.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK = 1024
# the batch-summed correlation spectrum (dh) in fp16 too when half, else fp32 (benchmarks/long_conv.py measures both)
HALF_CORRELATION = True


def fft_size(t: int) -> int:
    return 1 << (2 * t - 1).bit_length()


@triton.jit
def _scale_pad_kernel(x_ptr, out_ptr, scale_ptr, T, N, HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr):
    """out[row, :N] = x[row, :T] / max|x[row]| zero-padded (no scaling without HAS_SCALE)."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    if HAS_SCALE:
        peak = tl.zeros((BLOCK,), dtype=tl.float32)
        for start in range(0, T, BLOCK):
            x = tl.load(x_ptr + row * T + start + offs, mask=start + offs < T, other=0.0).to(tl.float32)
            peak = tl.maximum(peak, tl.abs(x))
        scale = tl.maximum(tl.max(peak), 1e-30)
        tl.store(scale_ptr + row, scale)
        inv = 1.0 / scale
    else:
        inv = 1.0
    for start in range(0, N, BLOCK):
        x = tl.load(x_ptr + row * T + start + offs, mask=start + offs < T, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * N + start + offs, (x * inv).to(out_ptr.dtype.element_ty), mask=start + offs < N)


@triton.jit
def _spectral_product_kernel(u_ptr, h_ptr, h_scale_ptr, y_ptr, C, K, HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr):
    """y[row, k] = u[row, k] * h[row % C, k] (* h_scale[row % C]); complex as interleaved (re, im) pairs."""
    row = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = k < K
    c = row % C
    ur = tl.load(u_ptr + (row * K + k) * 2, mask=inside, other=0.0).to(tl.float32)
    ui = tl.load(u_ptr + (row * K + k) * 2 + 1, mask=inside, other=0.0).to(tl.float32)
    hr = tl.load(h_ptr + (c * K + k) * 2, mask=inside, other=0.0).to(tl.float32)
    hi = tl.load(h_ptr + (c * K + k) * 2 + 1, mask=inside, other=0.0).to(tl.float32)
    if HAS_SCALE:
        s = tl.load(h_scale_ptr + c)
        hr, hi = hr * s, hi * s
    tl.store(y_ptr + (row * K + k) * 2, (ur * hr - ui * hi).to(y_ptr.dtype.element_ty), mask=inside)
    tl.store(y_ptr + (row * K + k) * 2 + 1, (ur * hi + ui * hr).to(y_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _spectral_backward_kernel(
    dy_ptr, u_ptr, h_ptr, h_scale_ptr, w_ptr, g_scale_ptr, du_ptr, g_ptr, B, C, K,
    HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """du[b, c] = dy[b, c] conj(h[c]) (* h_scale[c]);  g[c] = g_scale[c] sum_b w[b, c] dy[b, c] conj(u[b, c])."""
    c = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = k < K
    hr = tl.load(h_ptr + (c * K + k) * 2, mask=inside, other=0.0).to(tl.float32)
    hi = tl.load(h_ptr + (c * K + k) * 2 + 1, mask=inside, other=0.0).to(tl.float32)
    if HAS_SCALE:
        s = tl.load(h_scale_ptr + c)
        hr, hi = hr * s, hi * s
    gr = tl.zeros((BLOCK,), dtype=tl.float32)
    gi = tl.zeros((BLOCK,), dtype=tl.float32)
    for b in range(B):
        at = ((b * C + c) * K + k) * 2
        dr = tl.load(dy_ptr + at, mask=inside, other=0.0).to(tl.float32)
        di = tl.load(dy_ptr + at + 1, mask=inside, other=0.0).to(tl.float32)
        ur = tl.load(u_ptr + at, mask=inside, other=0.0).to(tl.float32)
        ui = tl.load(u_ptr + at + 1, mask=inside, other=0.0).to(tl.float32)
        tl.store(du_ptr + at, (dr * hr + di * hi).to(du_ptr.dtype.element_ty), mask=inside)
        tl.store(du_ptr + at + 1, (di * hr - dr * hi).to(du_ptr.dtype.element_ty), mask=inside)
        if HAS_SCALE:
            w = tl.load(w_ptr + b * C + c)
            dr, di = dr * w, di * w
        gr += dr * ur + di * ui
        gi += di * ur - dr * ui
    g_scale = tl.load(g_scale_ptr + c)
    tl.store(g_ptr + (c * K + k) * 2, (gr * g_scale).to(g_ptr.dtype.element_ty), mask=inside)
    tl.store(g_ptr + (c * K + k) * 2 + 1, (gi * g_scale).to(g_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _finish_kernel(
    full_ptr, scale_ptr, x_ptr, skip_ptr, out_ptr, C, T, N,
    HAS_SCALE: tl.constexpr, HAS_SKIP: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """out[row, :T] = full[row, :T] * scale[row] + skip[row % C] x[row, :T], in out's dtype."""
    row = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = t < T
    y = tl.load(full_ptr + row * N + t, mask=inside, other=0.0).to(tl.float32)
    if HAS_SCALE:
        y = y * tl.load(scale_ptr + row)
    if HAS_SKIP:
        x = tl.load(x_ptr + row * T + t, mask=inside, other=0.0).to(tl.float32)
        y += tl.load(skip_ptr + row % C).to(tl.float32) * x
    tl.store(out_ptr + row * T + t, y.to(out_ptr.dtype.element_ty), mask=inside)


def _padded(x: Tensor, n: int, half: bool) -> tuple[Tensor, Tensor | None]:
    """x [R, T] scaled (half) and zero-padded to [R, n] in the transform's dtype; the scales [R] (half) or None."""
    rows, t = x.shape
    out = torch.empty(rows, n, device=x.device, dtype=torch.float16 if half else torch.float32)
    scale = torch.empty(rows, device=x.device, dtype=torch.float32) if half else None
    _scale_pad_kernel[(rows,)](x, out, scale, t, n, HAS_SCALE=half, BLOCK=BLOCK)
    return out, scale


def _finish(full: Tensor, scale: Tensor | None, x: Tensor, skip: Tensor | None, dtype: torch.dtype) -> Tensor:
    rows, t = x.shape
    out = torch.empty(rows, t, device=x.device, dtype=dtype)
    grid = (rows, triton.cdiv(t, BLOCK))
    _finish_kernel[grid](
        full, scale, x, skip, out, 1 if skip is None else skip.shape[0], t, full.shape[-1],
        HAS_SCALE=scale is not None, HAS_SKIP=skip is not None, BLOCK=BLOCK,
    )  # fmt: skip
    return out


class _CuFFTLongConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, h: Tensor, skip: Tensor | None, half: bool) -> Tensor:
        c, t = u.shape[-2:]
        x = u.reshape(-1, t).contiguous()
        n = fft_size(t)
        padded, scale_h = _padded(h[:, :t].contiguous(), n, half)
        spec_h = torch.view_as_real(torch.fft.rfft(padded))  # [C, K, 2], unnormalised: entries up to T
        padded, scale = _padded(x, n, half)
        spec_u = torch.view_as_real(torch.fft.rfft(padded, norm="forward"))  # [R, K, 2], 1/N folded in
        k = spec_u.shape[1]
        spec_y = torch.empty_like(spec_u)
        _spectral_product_kernel[(x.shape[0], triton.cdiv(k, BLOCK))](
            spec_u, spec_h, scale_h, spec_y, c, k, HAS_SCALE=half, BLOCK=BLOCK
        )
        full = torch.fft.irfft(torch.view_as_complex(spec_y), n=n, norm="forward")
        y = _finish(full, scale, x, skip, u.dtype)
        ctx.save_for_backward(spec_u, spec_h, scale_h, scale, h, skip)
        ctx.half, ctx.shape, ctx.n = half, u.shape, n
        return y.view(u.shape)

    @staticmethod
    def backward(ctx, dy: Tensor):
        spec_u, spec_h, scale_h, scale, h, skip = ctx.saved_tensors
        c, t = ctx.shape[-2:]
        n = ctx.n
        g = dy.reshape(-1, t).contiguous()
        rows, k = spec_u.shape[:2]
        padded, scale_g = _padded(g, n, ctx.half)
        spec_g = torch.view_as_real(torch.fft.rfft(padded, norm="forward"))
        spec_du = torch.empty_like(spec_g)
        # sum_b dY conj(U) carries 1/N^2 and, in half precision, each sequence's two scales w = s_u s_dy; stored
        # times N / sum_b w it stays near 1 whatever the batch, in fp16's range (|entries| <= N / 4)
        w = None if scale is None else scale * scale_g
        half_corr = ctx.half and HALF_CORRELATION
        if half_corr:
            total = w.view(-1, c).sum(0)
            g_scale = n / total
        else:
            g_scale = torch.full((c,), float(n), device=g.device)
        spec_dh = torch.empty(c, k, 2, device=g.device, dtype=spec_g.dtype if half_corr else torch.float32)
        _spectral_backward_kernel[(c, triton.cdiv(k, BLOCK))](
            spec_g, spec_u, spec_h, scale_h, w, g_scale, spec_du, spec_dh, rows // c, c, k,
            HAS_SCALE=ctx.half, BLOCK=BLOCK,
        )  # fmt: skip
        full = torch.fft.irfft(torch.view_as_complex(spec_du), n=n, norm="forward")
        du = _finish(full, scale_g, g, skip, dy.dtype)
        # the correlation sum_b sum_t dy[t] u[t - s], lags 0 .. T-1
        corr = torch.fft.irfft(torch.view_as_complex(spec_dh), n=n, norm="forward")[:, :t]
        corr = corr.float() * total[:, None] if half_corr else corr
        taps = h.shape[-1]
        dh = corr[:, :taps] if taps <= t else torch.nn.functional.pad(corr, (0, taps - t))
        dskip = None if skip is None else corr[:, 0].to(skip.dtype)  # lag 0: sum_t dy[t] u[t]
        return du.view(ctx.shape), dh.to(h.dtype), dskip, None


def long_conv_cufft(u: Tensor, h: Tensor, skip: Tensor | None = None, half: bool = False) -> Tensor:
    """`long_conv` (see `reference`) through cuFFT with fused Triton passes; half: fp16 transforms (CUDA only)."""
    return _CuFFTLongConv.apply(u, h, skip, half)
