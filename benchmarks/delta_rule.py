"""DeltaNet's chunk kernel on the GPU, beside fla-core's `chunk_delta_rule`, in one run.

Sections (default order: ceilings, kernels, model, correctness, profile, extra):
  ceilings     device-to-device copy bandwidth and a bf16 matrix product, measured here
  kernels      forward and forward+backward times in bf16 at the issue's three shapes, ours (the launchers' own
               choices, then each of --variants) and fla's, with the bytes and FLOPs our kernels move and do
  model        training tokens/s of a deltanet+glu language model with our op, then with fla's op swapped in
  correctness  relative error of ours and fla's against a float32 reference on the same bf16 inputs (outputs,
               final state, every gradient)
  profile      per-kernel device times of one forward+backward of each
  extra        our float32 path, ragged lengths, odd head dims, chunk 16 and 32, and the decode kernels

    PYTHONUNBUFFERED=1 python benchmarks/delta_rule.py --out /tmp/bench [--sections kernels,model]

fla's conventions, read off fla-core 0.6.0: chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None,
output_final_state=False, use_qk_l2norm_in_kernel=False, ...) with q, k, v [B, T, H, D], beta [B, T, H], states
[B, H, K, V] mapping keys to values (as ours); it refuses float32. Keys are L2-normalised before both calls.
fla autotunes some 150 configs per shape (minutes on the lent machine); unless --retune-fla, its autotuners start
from the picks its own autotuner made on an H100 in an earlier full run (FLA_PICKS at the end of this file).
`--smoke` runs the sections' plumbing on tiny shapes on the CPU (Triton interpreter, no fla, host timers).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from unittest import mock

SMOKE = "--smoke" in sys.argv
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402

from archsearch.kernels.delta_rule import chunk as chunk_module  # noqa: E402
from archsearch.kernels.delta_rule.chunk import chunk_delta_rule_triton  # noqa: E402
from archsearch.kernels.delta_rule.reference import chunk_delta_rule_reference, recurrent_delta_rule  # noqa: E402

SHAPES = [(8, 2048, 16, 64), (4, 4096, 16, 128), (1, 16384, 16, 128)]  # B, T, H, D (K = V = D)
SMOKE_SHAPES = [(1, 40, 2, 16), (1, 70, 1, 32)]
DEVICE = "cpu" if SMOKE else "cuda"
RESULTS: dict = {}
VARIANT_NAMES: list[str] = []
FLA_ERRORS = True
LOG_FILE: Path | None = None


def say(line: str = "") -> None:
    print(line, flush=True)
    if LOG_FILE is not None:
        with LOG_FILE.open("a") as f:
            f.write(line + "\n")


def fla_op():
    try:
        from fla.ops.delta_rule import chunk_delta_rule

        return chunk_delta_rule
    except Exception as e:  # noqa: BLE001
        say(f"fla not available: {e!r}")
        return None


def seed_fla_autotune(h: int | None = None) -> int:
    """Give fla's autotuners the configs they picked on an H100 in an earlier run (FLA_PICKS), so this run spends
    no minutes re-tuning them; with h, the picks made at 16 heads are also entered for h heads (the head count
    sets only the grid). Returns how many entries were seeded."""
    import ast

    from triton.runtime.autotuner import Autotuner

    tuners: dict[str, list] = {}
    for name, mod in list(sys.modules.items()):
        if not name.startswith("fla.") or mod is None:
            continue
        for obj in list(vars(mod).values()):
            for _ in range(4):
                if isinstance(obj, Autotuner):
                    if all(obj is not t for t in tuners.get(obj.base_fn.__name__, [])):
                        tuners.setdefault(obj.base_fn.__name__, []).append(obj)
                    break
                obj = getattr(obj, "fn", None)
    n = 0
    for line in FLA_PICKS.strip().splitlines():
        fn, key, cfg = (x.strip() for x in line.split(" | "))
        key = ast.literal_eval(key)
        for tuner in tuners.get(fn, []):
            match = [c for c in tuner.configs if _fields(str(c)).items() >= _fields(cfg).items()]
            if not match:
                continue
            keys = [key]
            if h is not None and key[0] == 16:
                heads = 2 if tuner.keys[:2] == ["H", "HV"] else 1
                keys.append(tuple(h if i < heads else x for i, x in enumerate(key)))
            for k in keys:
                if k not in tuner.cache:
                    tuner.cache[k] = match[0]
                    n += 1
    return n


def _fields(config: str) -> dict[str, str]:
    """'BV: 64, num_warps: 4, ...' -> {'BV': '64', 'num_warps': '4', ...} (Triton versions print extra fields)."""
    return dict(item.split(": ", 1) for item in config.split(", "))


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def bench(fn, grad_to_none=None) -> float:
    """Median milliseconds of fn: CUDA events through triton's do_bench on the GPU, host clock in smoke mode."""
    if DEVICE == "cuda":
        return triton.testing.do_bench(fn, warmup=100, rep=400, grad_to_none=grad_to_none, return_mode="median")
    fn()
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def inputs(b: int, t: int, h: int, d: int, seed: int, dtype=torch.bfloat16, dv: int | None = None):
    """q, v standard normal, k L2-normalised, beta = sigmoid(normal), h0 normal / 4: the values DeltaNet feeds."""
    dv = d if dv is None else dv
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    q = torch.randn(b, t, h, d, device=DEVICE, generator=g).to(dtype)
    k = F.normalize(torch.randn(b, t, h, d, device=DEVICE, generator=g), dim=-1).to(dtype)
    v = torch.randn(b, t, h, dv, device=DEVICE, generator=g).to(dtype)
    beta = torch.randn(b, t, h, device=DEVICE, generator=g).sigmoid().to(dtype)
    h0 = torch.randn(b, h, d, dv, device=DEVICE, generator=g) / 4
    return q, k, v, beta, h0


def with_grads(fn, q, k, v, beta, h0, seed=1, upcast=False):
    """(o, final state, [dq, dk, dv, dbeta, dh0]) under a fixed random projection of o and the final state."""
    leaves = [x.detach().clone().float() if upcast else x.detach().clone() for x in (q, k, v, beta)]
    leaves = [x.requires_grad_() for x in leaves]
    s0 = h0.detach().clone().requires_grad_() if h0 is not None else None
    o, s = fn(*leaves, initial_state=s0, output_final_state=True)
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    do = torch.randn(o.shape, device=DEVICE, generator=g)
    ds = torch.randn(s.shape, device=DEVICE, generator=g)
    ((o.float() * do).sum() + (s.float() * ds).sum()).backward()
    grads = [x.grad for x in leaves] + ([s0.grad] if s0 is not None else [])
    return o.detach(), s.detach(), [gr.detach() for gr in grads]


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.float(), ref.float()
    if not torch.isfinite(x).all():
        return float("nan")
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


NAMES = ("o", "ht", "dq", "dk", "dv", "dbeta", "dh0")


def section_ceilings() -> None:
    if DEVICE != "cuda":
        return
    n = 1 << 28  # 1 GiB of float32
    a = torch.randn(n, device="cuda")
    b = torch.empty_like(a)
    ms = bench(lambda: b.copy_(a))
    copy_tbs = 2 * a.numel() * 4 / ms / 1e9
    m = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms_mm = bench(lambda: m @ m)
    mm_tflops = 2 * 8192**3 / ms_mm / 1e9
    RESULTS["ceilings"] = {"copy_TBps": copy_tbs, "bf16_mm_TFLOPs": mm_tflops}
    say(
        f"ceilings: device-to-device copy {copy_tbs:.2f} TB/s (read + write), bf16 8192^3 product {mm_tflops:.0f} TFLOP/s"
    )


def section_correctness(shapes, fla) -> None:
    say("\n## correctness: relative error ||x - ref|| / ||ref|| against float32 on the same bf16 inputs")
    say(f"{'shape':<22} {'impl':<5} " + " ".join(f"{n:>8}" for n in NAMES))
    rows = []
    for b, t, h, d in shapes:
        q, k, v, beta, h0 = inputs(b, t, h, d, seed=10)
        ref = with_grads(chunk_delta_rule_reference, q, k, v, beta, h0, upcast=True)
        impls = [("ours", chunk_delta_rule_triton)] + ([("fla", fla)] if fla is not None and FLA_ERRORS else [])
        for name, fn in impls:
            try:
                out = with_grads(fn, q, k, v, beta, h0)
                errs = [rel(x, r) for x, r in zip((out[0], out[1], *out[2]), (ref[0], ref[1], *ref[2]), strict=True)]
            except Exception:  # noqa: BLE001
                say(traceback.format_exc())
                errs = [float("nan")] * len(NAMES)
            rows.append({"shape": f"B{b} T{t} H{h} D{d}", "impl": name, **dict(zip(NAMES, errs, strict=True))})
            say(f"{rows[-1]['shape']:<22} {name:<5} " + " ".join(f"{e:8.1e}" for e in errs))
        del ref
    RESULTS["correctness"] = rows


def section_extra() -> None:
    say("\n## our other paths against float32 (float32 inputs: exact float32 dots; bf16 at ragged lengths)")
    extra = []
    cases = [  # (label, B, T, H, K, V, chunk, dtype); the first config of every kernel, to save compile time
        ("fp32 T300 K64 V32 c32", 2, 300, 4, 64, 32, 32, torch.float32),
        ("bf16 T77 K96 V80 c16", 1, 77, 3, 96, 80, 16, torch.bfloat16),
    ]
    if SMOKE:
        cases = [("fp32 T30 K16 V16 c16", 1, 30, 1, 16, 16, 16, torch.float32)]
    tuned = [getattr(chunk_module, n) for n in dir(chunk_module) if n.endswith("_kernel")]
    tuned = [kn for kn in tuned if hasattr(kn, "configs")]
    saved = [kn.configs for kn in tuned]
    for kn in tuned:
        kn.configs = kn.configs[:1]
    for label, b, t, h, dk, dv, c, dtype in cases:
        try:
            q, k, v, beta, h0 = inputs(b, t, h, dk, seed=11, dtype=dtype, dv=dv)
            ref = with_grads(chunk_delta_rule_reference, q, k, v, beta, h0, upcast=True)
            for fuse in (True, False):
                chunk_module.FUSE_OUTPUT = chunk_module.FUSE_DV = fuse

                def ours(*a, c=c, **kw):
                    return chunk_delta_rule_triton(*a, chunk_size=c, **kw)

                out = with_grads(ours, q, k, v, beta, h0)
                errs = [rel(x, r) for x, r in zip((out[0], out[1], *out[2]), (ref[0], ref[1], *ref[2]), strict=True)]
                tag = f"{label} {'fused' if fuse else 'unfused'}"
                extra.append({"case": tag, **dict(zip(NAMES, errs, strict=True))})
                say(f"{tag:<36} " + " ".join(f"{n}={e:.1e}" for n, e in zip(NAMES, errs, strict=True)))
        except Exception:  # noqa: BLE001
            say(f"{label}: FAILED\n{traceback.format_exc()}")
        finally:
            chunk_module.FUSE_OUTPUT = chunk_module.FUSE_DV = None
    for kn, cf in zip(tuned, saved, strict=True):
        kn.configs = cf

    try:  # the decode kernels
        from archsearch.kernels.delta_rule import delta_rule_step, fused_recurrent_delta_rule

        q, k, v, beta, h0 = inputs(4, 33, 8, 64, seed=12, dtype=torch.bfloat16)
        o, s = fused_recurrent_delta_rule(q, k, v, beta, initial_state=h0, output_final_state=True)
        o_r, s_r = recurrent_delta_rule(
            *(x.float() for x in (q, k, v, beta)), initial_state=h0, output_final_state=True
        )
        o1, s1 = delta_rule_step(q[:, 0], k[:, 0], v[:, 0], beta[:, 0], h0)
        o1_r, s1_r = recurrent_delta_rule(
            *(x[:, :1].float() for x in (q, k, v, beta)), initial_state=h0, output_final_state=True
        )
        line = (
            f"fused recurrent bf16 T33: o={rel(o, o_r):.1e} ht={rel(s, s_r):.1e}; "
            f"step: o={rel(o1, o1_r[:, 0]):.1e} state={rel(s1, s1_r):.1e}"
        )
        extra.append({"case": line})
        say(line)
    except Exception:  # noqa: BLE001
        say(f"decode kernels FAILED\n{traceback.format_exc()}")
    RESULTS["correctness_extra"] = extra


def traffic(b: int, t: int, h: int, d: int, c: int = 64) -> dict[str, float]:
    """Bytes our kernels move and FLOPs they do (bf16 tensors, fp32 Tm and states), counted from the kernels."""
    n = b * t * h  # token-heads
    e = 2  # bytes per bf16 element
    hs = d * d / c  # state elements per token-head (one K x V state per chunk)
    fwd_bytes = n * (
        (2 * d + 1) * e
        + 2 * d * e
        + 4 * c  # prepare: read k, v, beta; write w, u, Tm (fp32)
        + 4 * d * e
        + d * e
        + hs * e
        + d * e  # state: read q, k, w, u; write o, h, U'
    )
    bwd_bytes = n * (
        4 * d * e
        + hs * e
        + d * e  # state: read q, k, w, dO; write dh, dU'
        + (3 * d + 1) * e
        + 4 * c
        + 2 * hs * e
        + 3 * d * e  # grads: read q, k, v, beta, Tm, h, dh, U', dU', dO
        + 3 * d * e
        + 4  # grads: write dq, dk, dv, dbeta
    )
    # multiply-adds per token-head: prepare K K^T, W, U; state W S, Q K^T, Q S, P U', K^T U'
    fwd_mac = n * (3 * c * d + 3 * d * d + 2 * c * d)
    # backward state: Q K^T, P^T dO, K dS, Q^T dO, W^T dU'; grads: 3 state products, dP, dTm, Tm^T dU, dP K,
    # dP^T Q, Tm products for W (2), dA (2 C x C x C), K K^T, 2 for dA into dk
    bwd_mac = n * (2 * c * d + 3 * d * d + 3 * d * d + 3 * c * d + 4 * c * d + 2 * c * c + 3 * c * d)
    floor_fwd = n * (3 * d * e + e + d * e)  # q, k, v, beta read once, o written once
    floor_fb = floor_fwd + n * (d * e + 3 * d * e + 3 * d * e + e)  # + dO read, q, k, v read, dq, dk, dv, dbeta
    return {
        "fwd_bytes": fwd_bytes,
        "fb_bytes": fwd_bytes + bwd_bytes,
        "fwd_flops": 2 * fwd_mac,
        "fb_flops": 2 * (fwd_mac + bwd_mac),
        "floor_fwd_bytes": floor_fwd,
        "floor_fb_bytes": floor_fb,
    }


# our variants: overrides of the launchers' choices in chunk.py (None there: the launcher decides)
VARIANTS = {
    "oFdvF": {"FUSE_OUTPUT": True, "FUSE_DV": True},  # output / local dU' inside the state kernels
    "oSdvS": {"FUSE_OUTPUT": False, "FUSE_DV": False},  # ... in separate parallel kernels
    "oFdvS": {"FUSE_OUTPUT": True, "FUSE_DV": False},
    "oSdvF": {"FUSE_OUTPUT": False, "FUSE_DV": True},
    "gradsWholeK": {"KBLOCK_GRADS": False},  # the gradient kernel with all of K at once
    "gradsKBlocks": {"KBLOCK_GRADS": True},  # ... one block of 64 key columns at a time
    "tiles": {"REG_BLOCKS": True},  # the inverse as 16 x 16 register tiles
    "substRows": {"REG_BLOCKS": False, "REG_SUBST": False},  # built in tm, the diagonal blocks re-reading rows
    "substRegs": {"REG_BLOCKS": False, "REG_SUBST": True},  # ... the diagonal blocks in registers
}


def variant(name: str | None):
    """A variant's overrides in force, forward and backward alike (None: the launchers' own choices)."""
    return mock.patch.multiple(chunk_module, **VARIANTS[name]) if name is not None else contextlib.nullcontext()


def time_op(fn, q, k, v, beta, name: str | None = None) -> tuple[float, float]:
    """(forward ms, forward+backward ms), inputs requiring grad as in training, no initial or final state;
    with name, that variant of ours."""
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v, beta)]
    do = torch.randn_like(v)

    def fwd():
        with variant(name):
            return fn(*leaves)[0]

    def fwd_bwd():
        with variant(name):
            fn(*leaves)[0].backward(do)

    fwd_bwd()  # compile and autotune outside the timing
    sync()
    return bench(fwd), bench(fwd_bwd, grad_to_none=leaves)


def section_kernels(shapes, fla) -> None:
    say("\n## timings, bf16, median ms (CUDA events); speedup = fla / ours")
    rows = []
    ceil = RESULTS.get("ceilings", {})
    for b, t, h, d in shapes:
        q, k, v, beta, _ = inputs(b, t, h, d, seed=20)
        row = {"shape": f"B{b} T{t} H{h} D{d}"}
        for name in VARIANT_NAMES:
            try:
                row[f"{name}_fwd"], row[f"{name}_fb"] = time_op(chunk_delta_rule_triton, q, k, v, beta, name)
            except Exception:  # noqa: BLE001
                say(f"{name} {row['shape']}: FAILED\n{traceback.format_exc()}")
        try:  # what the dispatcher picks by default
            row["ours_fwd"], row["ours_fb"] = time_op(chunk_delta_rule_triton, q, k, v, beta)
        except Exception:  # noqa: BLE001
            say(f"ours {row['shape']}: FAILED\n{traceback.format_exc()}")
        if fla is not None:
            try:
                row["fla_fwd"], row["fla_fb"] = time_op(fla, q, k, v, beta)
            except Exception:  # noqa: BLE001
                say(f"fla {row['shape']}: FAILED\n{traceback.format_exc()}")
        tr = traffic(b, t, h, d)
        row.update(tr)
        if "ours_fwd" in row and "ours_fb" in row:
            row["ours_fwd_TBps"] = tr["fwd_bytes"] / row["ours_fwd"] / 1e9
            row["ours_fb_TBps"] = tr["fb_bytes"] / row["ours_fb"] / 1e9
            row["ours_fwd_TFLOPs"] = tr["fwd_flops"] / row["ours_fwd"] / 1e9
            row["ours_fb_TFLOPs"] = tr["fb_flops"] / row["ours_fb"] / 1e9
        if ceil:
            row["floor_fwd_ms"] = tr["floor_fwd_bytes"] / ceil["copy_TBps"] / 1e9
            row["floor_fb_ms"] = tr["floor_fb_bytes"] / ceil["copy_TBps"] / 1e9
        rows.append(row)
        say(json.dumps({kk: (round(vv, 4) if isinstance(vv, float) else vv) for kk, vv in row.items()}))
        del q, k, v, beta
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    RESULTS["kernels"] = rows
    print_kernel_table(rows)


def print_kernel_table(rows) -> None:
    def f(row, key, fmt="{:.3f}"):
        return fmt.format(row[key]) if key in row else "-"

    def ratio(row, part):
        return (
            f"{row[f'fla_{part}'] / row[f'ours_{part}']:.2f}x"
            if f"fla_{part}" in row and f"ours_{part}" in row
            else "-"
        )

    names = VARIANT_NAMES
    say("\n| shape | ours fwd | fla fwd | speedup | ours fwd+bwd | fla fwd+bwd | speedup |")
    say("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        say(
            f"| {r['shape']} | {f(r, 'ours_fwd')} | {f(r, 'fla_fwd')} | {ratio(r, 'fwd')} | {f(r, 'ours_fb')} | "
            f"{f(r, 'fla_fb')} | {ratio(r, 'fb')} |"
        )
    say("\nour variants (see VARIANTS in this script), ms fwd / fwd+bwd")
    say("| shape | " + " | ".join(names) + " |")
    say("| --- |" + " --- |" * len(names))
    for r in rows:
        say(f"| {r['shape']} | " + " | ".join(f"{f(r, n + '_fwd')} / {f(r, n + '_fb')}" for n in names) + " |")
    say("\n| shape | our bytes fwd / fwd+bwd (MB) | achieved TB/s fwd / fwd+bwd | our GFLOP fwd / fwd+bwd | "
        "achieved TFLOP/s fwd / fwd+bwd | I/O floor ms fwd / fwd+bwd |")  # fmt: skip
    say("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        say(
            f"| {r['shape']} | {r['fwd_bytes'] / 1e6:.0f} / {r['fb_bytes'] / 1e6:.0f} | "
            f"{f(r, 'ours_fwd_TBps', '{:.2f}')} / {f(r, 'ours_fb_TBps', '{:.2f}')} | "
            f"{r['fwd_flops'] / 1e9:.1f} / {r['fb_flops'] / 1e9:.1f} | "
            f"{f(r, 'ours_fwd_TFLOPs', '{:.0f}')} / {f(r, 'ours_fb_TFLOPs', '{:.0f}')} | "
            f"{f(r, 'floor_fwd_ms')} / {f(r, 'floor_fb_ms')} |"
        )


def section_profile(shapes, fla) -> None:
    if DEVICE != "cuda":
        return
    from torch.profiler import ProfilerActivity, profile

    say("\n## per-kernel device time, one forward+backward (mean of 5), microseconds")
    out = {}
    for b, t, h, d in shapes:
        q, k, v, beta, _ = inputs(b, t, h, d, seed=30)
        impls = [("ours", chunk_delta_rule_triton, None)] + [
            (f"ours_{n}", chunk_delta_rule_triton, n) for n in VARIANT_NAMES
        ]
        for name, fn, var in impls + ([("fla", fla, None)] if fla is not None else []):
            leaves = [x.detach().clone().requires_grad_() for x in (q, k, v, beta)]
            do = torch.randn_like(v)
            with variant(var):
                fn(*leaves)[0].backward(do)
                sync()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        for x in leaves:
                            x.grad = None
                        fn(*leaves)[0].backward(do)
                    sync()
            events = [(e.key, e.device_time_total / 5) for e in prof.key_averages() if e.device_time_total > 0]
            events.sort(key=lambda x: -x[1])
            key = f"B{b} T{t} H{h} D{d} {name}"
            out[key] = events
            say(
                f"{key}: total {sum(x[1] for x in events):.0f} us; "
                + "; ".join(f"{n[:48]} {us:.0f}" for n, us in events[:12])
            )
        del q, k, v, beta
    RESULTS["profile"] = out


def section_model(fla, layers: int, d_model: int, heads: int, batch: int, seq: int, steps: int) -> None:
    import importlib

    # the module itself: `import archsearch.blocks.deltanet` would give the package attribute of that name, which
    # archsearch/blocks/__init__.py rebinds to the family object, and setting the op there changes nothing
    deltanet_block = importlib.import_module("archsearch.blocks.deltanet")
    from archsearch.architecture import Architecture, BlockSpec, LayerSpec
    from archsearch.kernels.delta_rule import chunk_delta_rule

    layer = LayerSpec(BlockSpec.make("deltanet", {"heads": heads}, d_model), BlockSpec.make("glu", {}, d_model))
    arch = Architecture(d_model=d_model, layers=(layer,) * layers, vocab_size=256)
    params = arch.cost().params
    say(f"\n## model: {arch.summary()}, {params / 1e6:.1f}M parameters, batch {batch} x {seq}, bf16 autocast, AdamW")
    ops = [("ours", chunk_delta_rule)] + ([("fla", fla)] if fla is not None else [])
    rows = []
    for name, op in ops:
        deltanet_block.chunk_delta_rule = op
        assert deltanet_block.DeltaNet.forward.__globals__["chunk_delta_rule"] is op
        try:
            row = {"op": name, **train_throughput(arch, batch, seq, steps)}
            rows.append(row)
            say(
                f"{name}: {row['tokens_per_s']:,.0f} tokens/s ({row['step_ms']:.1f} ms/step), "
                f"first loss {row['first_loss']:.4f}, peak {row['peak_GiB']:.1f} GiB"
            )
        except Exception:  # noqa: BLE001
            say(f"model with {name}: FAILED\n{traceback.format_exc()}")
        finally:
            deltanet_block.chunk_delta_rule = chunk_delta_rule
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
    RESULTS["model"] = {"arch": arch.summary(), "params": params, "batch": batch, "seq": seq, "rows": rows}
    if len(rows) == 2:
        say(f"model speedup (ours / fla tokens/s): {rows[0]['tokens_per_s'] / rows[1]['tokens_per_s']:.2f}x")


def train_throughput(arch, batch: int, seq: int, steps: int) -> dict[str, float]:
    """Training steps (bf16 autocast, AdamW) on random bytes: tokens/s over `steps` after three warm-up steps."""
    from archsearch.model import build_model

    torch.manual_seed(0)
    model = build_model(arch).to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=DEVICE == "cuda")
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randint(0, 256, (batch, seq + 1), device=DEVICE, generator=g)
    autocast = torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda")

    def step():
        with autocast:
            loss = model(x[:, :-1], x[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    first = step().item()
    for _ in range(2):
        step()
    sync()
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0
    return {
        "tokens_per_s": batch * seq * steps / dt,
        "step_ms": dt / steps * 1e3,
        "first_loss": first,
        "peak_GiB": peak,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sections", default="ceilings,kernels,model,correctness,profile,extra")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--variants", default="oFdvF,oSdvS,oFdvS,oSdvF", help="our variants to time beside the default")
    ap.add_argument("--no-fla-errors", action="store_true", help="correctness: ours only")
    ap.add_argument("--retune-fla", action="store_true", help="let fla autotune afresh instead of using FLA_PICKS")
    ap.add_argument("--layers", type=int, default=17)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    global LOG_FILE
    LOG_FILE = out / "delta_rule_bench.log"
    LOG_FILE.write_text("")
    sections = args.sections.split(",")
    global FLA_ERRORS
    VARIANT_NAMES[:] = [n for n in args.variants.split(",") if n]
    FLA_ERRORS = not args.no_fla_errors
    shapes = SMOKE_SHAPES if SMOKE else SHAPES
    fla = None if SMOKE else fla_op()
    if fla is not None and not args.retune_fla:
        say(f"fla autotune entries seeded from an earlier run's picks: {seed_fla_autotune(h=args.heads)}")

    started = datetime.datetime.now(datetime.timezone.utc)
    dev = torch.cuda.get_device_name() if DEVICE == "cuda" else platform.processor() or "cpu"
    import importlib.metadata as md

    versions = {p: md.version(p) for p in ("torch", "triton") if p}
    with contextlib.suppress(md.PackageNotFoundError):
        versions["fla-core"] = md.version("fla-core")
    say(f"# delta rule benchmark, {started:%Y-%m-%d %H:%M} UTC, {dev}, {versions}")
    say(f"command: {' '.join(sys.argv)}")
    RESULTS.update(device=dev, date=f"{started:%Y-%m-%d}", versions=versions, command=" ".join(sys.argv))

    for name in sections:
        t0 = time.perf_counter()
        try:
            if name == "ceilings":
                section_ceilings()
            elif name == "correctness":
                section_correctness(shapes, fla)
            elif name == "extra":
                section_extra()
            elif name == "kernels":
                section_kernels(shapes, fla)
            elif name == "profile":
                section_profile(shapes, fla)
            elif name == "model":
                if SMOKE:
                    section_model(None, 2, 64, 2, 2, 32, 1)
                else:
                    section_model(fla, args.layers, args.d_model, args.heads, args.batch, args.seq, args.steps)
        except Exception:  # noqa: BLE001
            say(f"section {name} FAILED\n{traceback.format_exc()}")
        say(f"[{name}: {time.perf_counter() - t0:.0f} s]")
        (out / "delta_rule_bench.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    if "kernels" in RESULTS:
        print_kernel_table(RESULTS["kernels"])


# fla-core 0.6.0's own autotuner picks on an NVIDIA H100 80GB HBM3 (triton 3.6.0), 2026-11-22, at this script's
# shapes: kernel | autotune key | best config, as Triton printed them (TRITON_PRINT_AUTOTUNING=1)
FLA_PICKS = """
chunk_scaled_dot_kkt_fwd_kernel | (16, 16, 64, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.float32') | BK: 64, num_warps: 4, num_ctas: 1, num_stages: 2, maxnreg: None
merge_16x16_to_64x64_inverse_kernel | (16, 64, False, 'torch.float32', 'torch.bfloat16') | DOT_PRECISION: ieee, num_warps: 2, num_ctas: 1, num_stages: 5, maxnreg: None
recompute_w_u_fwd_kernel | (16, 64, 64, 64, 64, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_gated_delta_rule_fwd_kernel_h_blockdim64 | (16, 16, 64, 64, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | BV: 64, num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_fwd_kernel_o | (16, 16, 64, 64, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | BK: 64, BV: 64, num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_bwd_kernel_dv_local | (16, 16, 64, 64, 64, 64, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_gated_delta_rule_bwd_kernel_dhu_blockdim64 | (16, 16, 64, 64, 64, False, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | BV: 32, num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_bwd_kernel_dqkwg | (16, 16, 64, 64, 64, 64, 64, False, False, True, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | num_warps: 4, num_ctas: 1, num_stages: 2, maxnreg: None
prepare_wy_repr_bwd_kernel | (16, 64, 64, 64, 64, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | num_warps: 2, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_scaled_dot_kkt_fwd_kernel | (16, 16, 128, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.float32') | BK: 64, num_warps: 2, num_ctas: 1, num_stages: 4, maxnreg: None
recompute_w_u_fwd_kernel | (16, 128, 128, 64, 64, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_gated_delta_rule_fwd_kernel_h_blockdim64 | (16, 16, 128, 128, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | BV: 64, num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_fwd_kernel_o | (16, 16, 128, 128, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | BK: 64, BV: 64, num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_bwd_kernel_dv_local | (16, 16, 128, 128, 64, 128, 128, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_gated_delta_rule_bwd_kernel_dhu_blockdim64 | (16, 16, 128, 128, 64, False, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | BV: 64, num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_bwd_kernel_dqkwg | (16, 16, 128, 128, 64, 128, 128, False, False, True, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
prepare_wy_repr_bwd_kernel | (16, 128, 128, 64, 64, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | num_warps: 2, num_ctas: 1, num_stages: 2, maxnreg: None
chunk_gated_delta_rule_fwd_kernel_h_blockdim64 | (16, 16, 64, 64, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.float32', 'torch.float32') | BV: 64, num_warps: 4, num_ctas: 1, num_stages: 4, maxnreg: None
chunk_gated_delta_rule_fwd_kernel_h_blockdim64 | (16, 16, 64, 64, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.float32') | BV: 64, num_warps: 4, num_ctas: 1, num_stages: 4, maxnreg: None
chunk_gated_delta_rule_bwd_kernel_dhu_blockdim64 | (16, 16, 64, 64, 64, False, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.float32', 'torch.float32', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | BV: 32, num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_gated_delta_rule_fwd_kernel_h_blockdim64 | (16, 16, 128, 128, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.float32', 'torch.float32') | BV: 64, num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_gated_delta_rule_fwd_kernel_h_blockdim64 | (16, 16, 128, 128, 64, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.float32') | BV: 64, num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
chunk_gated_delta_rule_bwd_kernel_dhu_blockdim64 | (16, 16, 128, 128, 64, False, False, 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.float32', 'torch.float32', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16', 'torch.bfloat16') | BV: 64, num_warps: 4, num_ctas: 1, num_stages: 3, maxnreg: None
"""


if __name__ == "__main__":
    main()
