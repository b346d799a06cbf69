"""GPU benchmark: causal long convolution (H3, Hyena), forward and forward+backward, ours beside the anchor.

Anchor: the float32 FFT convolution in plain PyTorch (`reference.long_conv_fft` under autograd). Errors are
relative (norm) against that float32 reference run on the same inputs (bf16 activations, float32 filter and skip)
upcast, so with its output unrounded: the anchor's own error on y and du is its bf16 output rounding. Variants: the
fused Monarch-FFT Triton kernel (fp16 or tf32 DFT products, warp counts, plan kept or reloaded), the cuFFT path with
fused Triton passes (fp32 or fp16 transforms), and the `long_conv` dispatcher; `--profile` lists the dispatch's
kernels by GPU time.

    PYTHONUNBUFFERED=1 python benchmarks/long_conv.py [--full] [--profile] [--shapes 0,1]
"""

from __future__ import annotations

import argparse
from unittest import mock

import torch
from _common import attempt, header, kernel_table, median_ms, relative, table

from archsearch.kernels.long_conv import fft as fft_module
from archsearch.kernels.long_conv import long_conv
from archsearch.kernels.long_conv import monarch as monarch_module
from archsearch.kernels.long_conv.fft import long_conv_cufft
from archsearch.kernels.long_conv.monarch import long_conv_monarch, supports
from archsearch.kernels.long_conv.reference import long_conv_fft

SHAPES = [(8, 1024, 2048), (1, 1024, 16384), (4, 1024, 4096), (2, 1024, 8192)]  # (B, D, T); the last two: dispatch


def monarch_with(f16: bool, warps: int, reload: bool):
    config = {"num_warps": warps, "num_stages": 1, "RELOAD": reload}

    def run(u, h, skip):
        with mock.patch.object(monarch_module, "_launch_config", lambda n: config):
            return long_conv_monarch(u, h, skip, f16=f16)

    return run


def cufft_half(correlation_in_half: bool):
    def run(u, h, skip):
        with mock.patch.object(fft_module, "HALF_CORRELATION", correlation_in_half):
            return long_conv_cufft(u, h, skip, half=True)

    return run


def variants(t: int, full: bool) -> dict:
    """The forms timed at T; `full` adds the ones the dispatch was chosen from (warps, plan reloading, precisions)."""
    out = {"anchor: torch fp32 FFT": long_conv_fft}
    if supports(t) and (full or t <= 2048):
        configs = ((4, False), (4, True), (8, True)) if t <= 2048 else ((4, True), (8, True))
        for warps, reload in configs if full else configs[:1]:
            out[f"monarch fp16, {warps} warps{', plan reloaded' if reload else ''}"] = monarch_with(True, warps, reload)
        if full and t <= 2048:
            out["monarch tf32, 8 warps"] = monarch_with(False, 8, False)
    if full:
        out["cuFFT fp32 + fused passes"] = lambda u, h, s: long_conv_cufft(u, h, s, half=False)
    out["cuFFT fp16 + fused passes"] = cufft_half(True)
    if full or t > 2048:
        out["cuFFT fp16, fp32 correlation spectrum"] = cufft_half(False)
    out["long_conv (dispatch)"] = long_conv
    return out


def inputs(b: int, d: int, t: int):
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(b, d, t, device="cuda", generator=g).bfloat16()
    # Hyena-like filters: noise under exponential windows whose decay spreads over the channels
    rate = torch.logspace(-3, -1, d, device="cuda")[:, None]
    h = torch.randn(d, t, device="cuda", generator=g) * torch.exp(-rate * torch.arange(t, device="cuda")) * 0.1
    skip = torch.randn(d, device="cuda", generator=g)
    probe = torch.randn(b, d, t, device="cuda", generator=g).bfloat16()
    return u, h, skip, probe


def forward_backward(fn, u, h, skip, probe):
    leaves = [x.detach().requires_grad_() for x in (u, h, skip)]
    y = fn(*leaves)
    return (y, *torch.autograd.grad(y, leaves, probe))


def profile(u, h, skip, probe) -> str:
    """The dispatch's fwd+bwd kernels by GPU time (what limits it)."""
    return kernel_table(lambda: forward_backward(long_conv, u, h, skip, probe), reps=10)


def bench_shape(b: int, d: int, t: int, full: bool, with_profile: bool) -> str:
    u, h, skip, probe = inputs(b, d, t)
    ref = forward_backward(long_conv_fft, *(x.double() for x in (u, h, skip, probe)))
    rows, anchor = [], None
    for name, fn in variants(t, full).items():
        got = attempt(lambda fn=fn: forward_backward(fn, u, h, skip, probe), f"{name} at B{b} D{d} T{t}")
        if got is None:
            rows.append([name, "failed", "", "", "", "", "", ""])
            continue
        errors = [relative(x, r) for x, r in zip(got, ref, strict=True)]
        with torch.no_grad():
            fwd = median_ms(lambda fn=fn: fn(u, h, skip))
        both = median_ms(lambda fn=fn: forward_backward(fn, u, h, skip, probe))
        anchor = anchor or both
        rows.append([name, fwd, both, f"{anchor / both:.2f}x", *(f"{e:.1e}" for e in errors)])
    headers = ["form", "fwd ms", "fwd+bwd ms", "vs anchor", "err y", "err du", "err dh", "err dskip"]
    text = f"\n### B{b} D{d} T{t}\n\n" + table(headers, rows)
    if with_profile:
        text += f"\n\nprofile of long_conv (dispatch), 10 x fwd+bwd:\n{profile(u, h, skip, probe)}"
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="", help="indices into SHAPES, comma-separated (default: all)")
    ap.add_argument("--full", action="store_true", help="also the variants the dispatch was chosen from")
    ap.add_argument("--profile", action="store_true", help="also the dispatch's kernels by GPU time")
    args = ap.parse_args()
    shapes = [SHAPES[int(i)] for i in args.shapes.split(",")] if args.shapes else SHAPES
    print(header("Causal long convolution, forward and forward+backward (bf16 activations, fp32 filters)"))
    for shape in shapes:
        print(bench_shape(*shape, args.full, args.profile), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
