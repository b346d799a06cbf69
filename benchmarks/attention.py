"""GPU benchmark: causal attention, global and sliding-window, forward+backward in bf16, ours beside the anchors.

Anchors: FlexAttention compiled, on [B, H, T, D] tensors with a block mask built beforehand (sliding window); SDPA
forced to its flash backend (global causal). Ours: the `attention` dispatcher as the blocks call it ([B, T, H, D]),
which on CUDA without flash-attn takes our Triton kernel for windows and SDPA for global attention. Timed beside
them: SDPA with a band mask (the first dispatch for windows). "GPU ms" is the profiler's kernel time of one fwd+bwd, the wall time without the host's share. Errors
are relative to float32 SDPA with an explicit mask.

    PYTHONUNBUFFERED=1 python benchmarks/attention.py [--profile]
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from _common import attempt, gpu_ms, header, kernel_table, median_ms, relative, table
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from archsearch.kernels.attention import _sdpa, attention, visible

# (B, T, H, D, window)
SHAPES = [(8, 2048, 16, 64, 512), (1, 16384, 16, 128, 1024), (8, 2048, 16, 64, None)]


def inputs(b, t, h, d):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, probe = (torch.randn(b, t, h, d, device="cuda", generator=g).bfloat16() for _ in range(4))
    return q, k, v, probe


def forward_backward(fn, q, k, v, probe):
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    out = fn(*leaves)
    return (out, *torch.autograd.grad(out, leaves, probe))


def flex_anchor(t: int, window: int):
    def band(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (kv_idx > q_idx - window)

    mask = create_block_mask(band, B=None, H=None, Q_LEN=t, KV_LEN=t, device="cuda")
    flex = torch.compile(flex_attention, dynamic=False)

    def run(q, k, v):  # the anchor's own layout: [B, H, T, D], contiguous
        return flex(q, k, v, block_mask=mask)

    return run


def transposed(fn):
    """fn on [B, H, T, D] tensors, called and answering in [B, T, H, D] (the inputs' copies are not timed)."""
    return lambda q, k, v: fn(q, k, v).transpose(1, 2)


def bench_shape(b, t, h, d, window) -> str:
    q, k, v, probe = inputs(b, t, h, d)
    with torch.no_grad():
        mask = visible(t, t, window, "cuda")
        want = F.scaled_dot_product_attention(*(x.float().transpose(1, 2) for x in (q, k, v)), attn_mask=mask)
        want = want.transpose(1, 2)
    if window is None:
        anchor_name = "anchor: SDPA flash backend"

        def anchor(q, k, v):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        anchor_name, anchor = "anchor: FlexAttention (compiled, block mask)", flex_anchor(t, window)
    forms = {
        anchor_name: (anchor, True),
        "ours: attention()": (lambda q, k, v: attention(q, k, v, window=window), False),
    }
    if window is not None:
        forms["SDPA with band mask"] = (lambda q, k, v: _sdpa(q, k, v, window, None, True), False)
    rows, anchor_ms = [], None
    for name, (fn, heads_first) in forms.items():
        args = [x.transpose(1, 2).contiguous() for x in (q, k, v, probe)] if heads_first else [q, k, v, probe]
        got = attempt(lambda fn=fn, args=args: forward_backward(fn, *args), f"{name} at {b, t, h, d, window}")
        if got is None:
            rows.append([name, "failed", "", "", "", ""])
            continue
        out = got[0].transpose(1, 2) if heads_first else got[0]
        with torch.no_grad():
            fwd = median_ms(lambda fn=fn, args=args: fn(*args[:3]))
        both = median_ms(lambda fn=fn, args=args: forward_backward(fn, *args))
        device = gpu_ms(lambda fn=fn, args=args: forward_backward(fn, *args))
        anchor_ms = anchor_ms or both
        rows.append([name, fwd, both, f"{anchor_ms / both:.2f}x", device, f"{relative(out, want):.1e}"])
    title = f"\n### B{b} T{t} H{h} D{d} " + ("global causal" if window is None else f"window {window}") + "\n\n"
    return title + table(["form", "fwd ms", "fwd+bwd ms", "vs anchor", "fwd+bwd GPU ms", "err out"], rows)


def profile(b, t, h, d, window) -> str:
    """The kernels of one fwd+bwd, by GPU time: the anchor on [B, H, T, D], then ours on [B, T, H, D]."""
    q, k, v, probe = inputs(b, t, h, d)
    heads_first = [x.transpose(1, 2).contiguous() for x in (q, k, v, probe)]
    out = []
    for name, fn, args in (
        ("anchor", flex_anchor(t, window), heads_first),
        ("ours", lambda q, k, v: attention(q, k, v, window=window), [q, k, v, probe]),
    ):
        table_ = kernel_table(lambda fn=fn, args=args: forward_backward(fn, *args), rows=10)
        out.append(f"\n{name}, 5 x fwd+bwd at B{b} T{t} H{h} D{d} window {window}:\n{table_}")
    return "".join(out)


def main() -> None:
    print(header("Causal attention, bf16"))
    for shape in SHAPES:
        print(bench_shape(*shape), flush=True)
        torch.cuda.empty_cache()
    if "--profile" in sys.argv:
        print(profile(*SHAPES[0]))


if __name__ == "__main__":
    main()
