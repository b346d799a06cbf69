"""Causal long convolution through cuFFT, with the passes around the transforms fused in Triton: for lengths whose
transform does not fit one program's registers (see `monarch`).

Forward: one kernel scales each sequence (and each filter) to a maximum of 1 and writes it zero-padded to N (a power
of two >= 2T) in the transform's dtype; rfft (unscaled); one kernel multiplies by the filter's spectrum (computed once
per call and shared by the batch) and by 1/N, and writes the product packed as the spectrum of a complex signal of
half the length (`_pack_store`); an unscaled inverse complex transform of N/2 points, which yields the real result
interleaved (no complex-to-real transform: torch copies each one's input, and cuFFT adds a pass); one kernel takes the
first T samples, undoes the scale and adds the skip term. Backward does the same for du with the conjugated filter
spectrum, and in the product kernel also sums dY conj(U) over the batch, so dh (and dskip, its lag-0 value) costs
one transform per channel rather than one per sequence; a last pass rescales it into h's dtype.

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
def _pack_store(z_ptr, at_a, at_b, ar, ai, br, bi, cs, sn, first, second):
    """Store the half-length complex spectrum Z of the real signal whose (unnormalised) spectrum is Y, from
    a = Y[k] and b = Y[M - k] (M = N / 2, w = exp(2 pi i k / N) as cs + i sn): Z[k] = E + i P with
    E = a + conj(b), P = (a - conj(b)) w; and Z[M - k] = conj(E) + i conj(P). Then ifft_M(Z) (unscaled) holds
    y[2m] + i y[2m + 1]: the complex-to-real transform as a complex one of half the length."""
    er = ar + br
    ei = ai - bi
    dr = ar - br
    di = ai + bi
    pr = dr * cs - di * sn
    pi = dr * sn + di * cs
    tl.store(z_ptr + at_a, (er - pi).to(z_ptr.dtype.element_ty), mask=first)
    tl.store(z_ptr + at_a + 1, (ei + pr).to(z_ptr.dtype.element_ty), mask=first)
    tl.store(z_ptr + at_b, (er + pi).to(z_ptr.dtype.element_ty), mask=second)
    tl.store(z_ptr + at_b + 1, (pr - ei).to(z_ptr.dtype.element_ty), mask=second)


@triton.jit
def _spectral_product_kernel(
    u_ptr, h_ptr, h_scale_ptr, z_ptr, C, M, factor, HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Y[row] = u[row] h[row % C] factor (* h_scale[row % C]) over the M + 1 bins of N = 2M, stored packed as
    the M-point complex spectrum z[row] (see `_pack_store`); complex as interleaved (re, im) pairs. Each program
    takes bins k <= M / 2 and their mirrors M - k."""
    row = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    half = M // 2
    first = k <= half
    second = (k > 0) & (k < half)
    j = M - k
    c = row % C
    s = factor
    if HAS_SCALE:
        s = s * tl.load(h_scale_ptr + c)
    at = (row * (M + 1) + k) * 2
    bt = (row * (M + 1) + j) * 2
    ur = tl.load(u_ptr + at, mask=first, other=0.0).to(tl.float32)
    ui = tl.load(u_ptr + at + 1, mask=first, other=0.0).to(tl.float32)
    vr = tl.load(u_ptr + bt, mask=first, other=0.0).to(tl.float32)
    vi = tl.load(u_ptr + bt + 1, mask=first, other=0.0).to(tl.float32)
    hr = tl.load(h_ptr + (c * (M + 1) + k) * 2, mask=first, other=0.0).to(tl.float32) * s
    hi = tl.load(h_ptr + (c * (M + 1) + k) * 2 + 1, mask=first, other=0.0).to(tl.float32) * s
    gr = tl.load(h_ptr + (c * (M + 1) + j) * 2, mask=first, other=0.0).to(tl.float32) * s
    gi = tl.load(h_ptr + (c * (M + 1) + j) * 2 + 1, mask=first, other=0.0).to(tl.float32) * s
    edge = k == 0  # the DC and Nyquist bins: their imaginary parts are dropped, as irfft does
    ar = ur * hr - ui * hi
    ai = tl.where(edge, 0.0, ur * hi + ui * hr)
    br = vr * gr - vi * gi
    bi = tl.where(edge, 0.0, vr * gi + vi * gr)
    angle = k.to(tl.float32) * (3.141592653589793 / M)
    zt = (row * M + k) * 2
    _pack_store(z_ptr, zt, (row * M + j) * 2, ar, ai, br, bi, tl.cos(angle), tl.sin(angle), first, second)


@triton.jit
def _spectral_backward_kernel(
    dy_ptr, u_ptr, h_ptr, h_scale_ptr, w_ptr, g_scale_ptr, du_ptr, g_ptr, B, C, M, factor,
    HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """du[b, c] = dy[b, c] conj(h[c]) factor (* h_scale[c]);  g[c] = g_scale[c] sum_b w[b, c] dy[b, c] conj(u[b, c]);
    both stored packed as M-point complex spectra (see `_spectral_product_kernel`)."""
    c = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    half = M // 2
    first = k <= half
    second = (k > 0) & (k < half)
    j = M - k
    edge = k == 0
    s = factor
    if HAS_SCALE:
        s = s * tl.load(h_scale_ptr + c)
    hr = tl.load(h_ptr + (c * (M + 1) + k) * 2, mask=first, other=0.0).to(tl.float32) * s
    hi = tl.load(h_ptr + (c * (M + 1) + k) * 2 + 1, mask=first, other=0.0).to(tl.float32) * s
    qr = tl.load(h_ptr + (c * (M + 1) + j) * 2, mask=first, other=0.0).to(tl.float32) * s
    qi = tl.load(h_ptr + (c * (M + 1) + j) * 2 + 1, mask=first, other=0.0).to(tl.float32) * s
    angle = k.to(tl.float32) * (3.141592653589793 / M)
    cs = tl.cos(angle)
    sn = tl.sin(angle)
    gar = tl.zeros((BLOCK,), dtype=tl.float32)
    gai = tl.zeros((BLOCK,), dtype=tl.float32)
    gbr = tl.zeros((BLOCK,), dtype=tl.float32)
    gbi = tl.zeros((BLOCK,), dtype=tl.float32)
    for b in range(B):
        row = b * C + c
        at = (row * (M + 1) + k) * 2
        bt = (row * (M + 1) + j) * 2
        dr = tl.load(dy_ptr + at, mask=first, other=0.0).to(tl.float32)
        di = tl.load(dy_ptr + at + 1, mask=first, other=0.0).to(tl.float32)
        er = tl.load(dy_ptr + bt, mask=first, other=0.0).to(tl.float32)
        ei = tl.load(dy_ptr + bt + 1, mask=first, other=0.0).to(tl.float32)
        ur = tl.load(u_ptr + at, mask=first, other=0.0).to(tl.float32)
        ui = tl.load(u_ptr + at + 1, mask=first, other=0.0).to(tl.float32)
        vr = tl.load(u_ptr + bt, mask=first, other=0.0).to(tl.float32)
        vi = tl.load(u_ptr + bt + 1, mask=first, other=0.0).to(tl.float32)
        _pack_store(
            du_ptr, (row * M + k) * 2, (row * M + j) * 2,
            dr * hr + di * hi, tl.where(edge, 0.0, di * hr - dr * hi),
            er * qr + ei * qi, tl.where(edge, 0.0, ei * qr - er * qi),
            cs, sn, first, second,
        )  # fmt: skip
        if HAS_SCALE:
            w = tl.load(w_ptr + row)
            dr, di, er, ei = dr * w, di * w, er * w, ei * w
        gar += dr * ur + di * ui
        gai += di * ur - dr * ui
        gbr += er * vr + ei * vi
        gbi += ei * vr - er * vi
    g_scale = tl.load(g_scale_ptr + c)
    _pack_store(
        g_ptr, (c * M + k) * 2, (c * M + j) * 2,
        gar * g_scale, tl.where(edge, 0.0, gai * g_scale), gbr * g_scale, tl.where(edge, 0.0, gbi * g_scale),
        cs, sn, first, second,
    )  # fmt: skip


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


def _inverse(packed: Tensor, n: int) -> Tensor:
    """The real signals [R, n] from their packed spectra [R, n / 2, 2] (`_pack_store`): one unscaled complex
    transform of half the length, out of place, so torch makes no copy of its input (it clones the input of every
    complex-to-real transform, which cuFFT may overwrite) and cuFFT runs no pre-processing pass."""
    z = torch.fft.ifft(torch.view_as_complex(packed), norm="forward")
    return torch.view_as_real(z).view(packed.shape[0], n)


def _spectrum_grid(rows: int, n: int) -> tuple[int, int]:
    return (rows, triton.cdiv(n // 4 + 1, BLOCK))  # bins k <= M / 2 = n / 4, each program also takes M - k


@torch.library.custom_op("archsearch::long_conv_cufft", mutates_args=())
def _cufft_op(u: Tensor, h: Tensor, skip: Tensor | None, half: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y, and what the backward reuses: the spectra of u and h, their scales; the scales empty unless half)."""
    c, t = u.shape[-2:]
    x = u.reshape(-1, t).contiguous()
    n = fft_size(t)
    padded, scale_h = _padded(h[:, :t].contiguous(), n, half)
    spec_h = torch.view_as_real(torch.fft.rfft(padded))  # [C, K, 2], unnormalised: entries up to T
    padded, scale = _padded(x, n, half)
    spec_u = torch.view_as_real(torch.fft.rfft(padded))  # [R, K, 2], unnormalised; the 1/N is in the product
    rows = x.shape[0]
    spec_y = torch.empty(rows, n // 2, 2, device=x.device, dtype=spec_u.dtype)
    _spectral_product_kernel[_spectrum_grid(rows, n)](
        spec_u, spec_h, scale_h, spec_y, c, n // 2, 1.0 / n, HAS_SCALE=half, BLOCK=BLOCK
    )
    y = _finish(_inverse(spec_y, n), scale, x, skip, u.dtype)
    def given(scales: Tensor | None) -> Tensor:
        return x.new_empty(0, dtype=torch.float32) if scales is None else scales

    return y.view(u.shape), spec_u, spec_h, given(scale_h), given(scale)


@_cufft_op.register_fake
def _(u: Tensor, h: Tensor, skip: Tensor | None, half: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    c, t = u.shape[-2:]
    rows, bins = u.numel() // t, fft_size(t) // 2 + 1
    spectrum = torch.float16 if half else torch.float32
    return (
        u.new_empty(u.shape),
        u.new_empty(rows, bins, 2, dtype=spectrum),
        u.new_empty(c, bins, 2, dtype=spectrum),
        u.new_empty(c if half else 0, dtype=torch.float32),
        u.new_empty(rows if half else 0, dtype=torch.float32),
    )


@torch.library.custom_op("archsearch::long_conv_cufft_backward", mutates_args=())
def _cufft_backward_op(
    spec_u: Tensor, spec_h: Tensor, scale_h: Tensor, scale: Tensor, h: Tensor, skip: Tensor | None, dy: Tensor,
    half: bool,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """(du, dh, dskip; dskip empty without skip)."""
    c, t = dy.shape[-2:]
    n = fft_size(t)
    spec_u, spec_h, scale_h, scale = (x.contiguous() for x in (spec_u, spec_h, scale_h, scale))
    scale_h, scale = (scale_h, scale) if half else (None, None)
    g = dy.reshape(-1, t).contiguous()
    rows = spec_u.shape[0]
    padded, scale_g = _padded(g, n, half)
    spec_g = torch.view_as_real(torch.fft.rfft(padded))  # unnormalised; the 1/N is in the product
    spec_du = torch.empty(rows, n // 2, 2, device=g.device, dtype=spec_g.dtype)
    # sum_b dY conj(U) of the unnormalised spectra carries N (the correlation's 1/N) and, in half precision,
    # each sequence's two scales w = s_u s_dy; stored times 1 / (N sum_b w) it stays near 1 whatever the batch,
    # in fp16's range (|entries| <= N / 4)
    w = None if scale is None else scale * scale_g
    half_corr = half and HALF_CORRELATION
    if half_corr:
        total = w.view(-1, c).sum(0)
        g_scale = 1.0 / (n * total)
    else:
        total = None
        g_scale = torch.full((c,), 1.0 / n, device=g.device)
    spec_dh = torch.empty(c, n // 2, 2, device=g.device, dtype=spec_g.dtype if half_corr else torch.float32)
    _spectral_backward_kernel[_spectrum_grid(c, n)](
        spec_g, spec_u, spec_h, scale_h, w, g_scale, spec_du, spec_dh, rows // c, c, n // 2, 1.0 / n,
        HAS_SCALE=half, BLOCK=BLOCK,
    )  # fmt: skip
    du = _finish(_inverse(spec_du, n), scale_g, g, skip, dy.dtype)
    # the correlation sum_b sum_t dy[t] u[t - s], lags 0 .. T-1, times total in one pass into h's dtype
    corr = _inverse(spec_dh, n)
    taps = h.shape[-1]
    lags = min(taps, t)
    dh = torch.empty(c, lags, device=g.device, dtype=h.dtype)
    _finish_kernel[(c, triton.cdiv(lags, BLOCK))](
        corr, total, None, None, dh, 1, lags, n, HAS_SCALE=half_corr, HAS_SKIP=False, BLOCK=BLOCK
    )
    if taps > t:
        dh = torch.nn.functional.pad(dh, (0, taps - t))
    dskip = dy.new_empty(0)
    if skip is not None:  # lag 0: sum_t dy[t] u[t]
        dskip = (corr[:, 0].float() * total if half_corr else corr[:, 0]).to(skip.dtype).contiguous()
    return du.view(dy.shape), dh, dskip


@_cufft_backward_op.register_fake
def _(spec_u, spec_h, scale_h, scale, h, skip, dy, half) -> tuple[Tensor, Tensor, Tensor]:
    return dy.new_empty(dy.shape), h.new_empty(h.shape), dy.new_empty(0) if skip is None else skip.new_empty(skip.shape)


def _cufft_setup(ctx, inputs, output) -> None:
    _, h, skip, half = inputs
    ctx.save_for_backward(*output[1:], h, skip)
    ctx.half = half


def _cufft_backward(ctx, dy: Tensor, *_unused: Tensor):
    *saved, skip = ctx.saved_tensors
    du, dh, dskip = _cufft_backward_op(*saved, skip, dy, ctx.half)
    return du, dh, None if skip is None else dskip, None


_cufft_op.register_autograd(_cufft_backward, setup_context=_cufft_setup)


def long_conv_cufft(u: Tensor, h: Tensor, skip: Tensor | None = None, half: bool = False) -> Tensor:
    """`long_conv` (see `reference`) through cuFFT with fused Triton passes; half: fp16 transforms (CUDA only).

    A `torch.library` op (archsearch::long_conv_cufft), so `torch.compile` keeps it in one graph. u is made
    contiguous outside the op, where Inductor fuses the layout into u's producer (see `long_conv_monarch`)."""
    return _cufft_op(u.contiguous(), h, skip, half)[0]
