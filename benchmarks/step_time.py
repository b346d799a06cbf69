"""GPU benchmark: where a proxy's training step goes, at the study's shape and at a larger one (issue 12).

benchmarks/width_study.yaml measured the same tokens/s (284K to 290K) for one family at d_model 256, 384 and 512
(1x to 4x the FLOPs per token) at the proxy's default batch of 16 x 256: the step is not bound by the model's
arithmetic. This script trains each width of that family (DeltaNet with sliding-window attention every other
layer, 8 layers, `benchmarks/width_space.yaml`) alone in this process with the proxy's own loop (compiled as a
study compiles, three timed windows), at 16 x 256 and at 16 x 1024, and then profiles 20 steps of a second run:
the GPU's kernel time per step against the step's wall time says whether the host or the GPU sets the pace. (The
H200 figures of 2026-12-02 in benchmarks/RESULTS.md were taken before user annotations were left out of that sum.)

    PYTHONUNBUFFERED=1 python benchmarks/step_time.py --out step_time.json
    PYTHONUNBUFFERED=1 python benchmarks/step_time.py --compile-modes reduce-overhead,step-graph   # the modes side by side
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time

import torch
from _common import width_family

from archsearch import Architecture
from archsearch.proxy import ProxySettings, run_proxy
from archsearch.proxy.train import COMPILE_MODES

PEAK_FLOPS = 989e12  # H100 / H200 SXM dense bf16
PROFILED = (30, 50)  # the steps between which the profile runs (the loop's host syncs fall every 10 steps)


def profiled_step(arch: Architecture, settings: ProxySettings) -> dict:
    """A second run of the same settings, untimed, with the profiler over steps 30 to 50: GPU kernel time per step
    (the sum of the kernels' device times) against the wall time per step, and the kernels that take the most."""
    tokens_per_step = settings.batch_size * settings.seq_len
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
    marks: dict[int, float] = {}

    def on_step(tokens: int, _loss: float) -> None:  # called after the loop's host sync, every 10 steps
        step = tokens // tokens_per_step
        if step == PROFILED[0]:
            prof.start()
            marks[step] = time.perf_counter()
        elif step == PROFILED[1] and PROFILED[0] in marks:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks[step] = time.perf_counter()
            prof.stop()

    run_proxy(arch, dataclasses.replace(settings, timing_steps=0), on_step=on_step)
    steps = PROFILED[1] - PROFILED[0]
    # kernels only: the optimizer's record_function range also shows on the GPU timeline, over its kernels
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    gpu_us = sum(e.self_device_time_total for e in events)
    launches = sum(e.count for e in events)
    top = sorted(events, key=lambda e: -e.self_device_time_total)[:6]
    return {"wall_ms_per_step": 1e3 * (marks[PROFILED[1]] - marks[PROFILED[0]]) / steps, "gpu_ms_per_step": gpu_us / 1e3 / steps,
            "kernels_per_step": launches / steps,
            "top_kernels": [(e.key[:60], round(e.self_device_time_total / steps, 1)) for e in top]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="256,512,768")
    ap.add_argument("--seq-lens", default="256,1024")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile-modes", default=ProxySettings().compile_mode, help=f"comma-separated, each width run in each: {', '.join(COMPILE_MODES)}")
    ap.add_argument("--out", default="step_time.json")
    args = ap.parse_args()
    modes = args.compile_modes.split(",")
    if unknown := [m for m in modes if m not in COMPILE_MODES]:
        ap.error(f"--compile-modes: expected modes among {', '.join(COMPILE_MODES)}, got {', '.join(unknown)}")
    out = {"device": torch.cuda.get_device_name() if args.device == "cuda" else args.device, "torch": torch.__version__,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"), "rows": []}
    for seq_len in map(int, args.seq_lens.split(",")):
        for d, mode in ((d, mode) for d in map(int, args.widths.split(",")) for mode in modes):
            arch = width_family(d)
            settings = ProxySettings(batch_size=args.batch, seq_len=seq_len, tokens=120 * args.batch * seq_len, evals=1,
                                     eval_tokens=8 * args.batch * seq_len, device=args.device, compile_mode=mode)
            m = run_proxy(arch, settings)
            row = {"d_model": d, "seq_len": seq_len, "batch": args.batch, "compile_mode": mode, "params": arch.cost(context=seq_len).params,
                   "status": m.status, "reason": m.reason, "tok_s": m.train_tokens_per_s, "spread": m.train_tokens_per_s_spread,
                   "compile_s": m.compile_seconds, "compile_error": m.compile_error, "bpb": m.bits_per_byte}
            if m.train_tokens_per_s:
                flops = 3 * arch.cost(context=seq_len).flops_per_token
                row["mfu"] = flops * m.train_tokens_per_s / PEAK_FLOPS
                row["step_ms"] = 1e3 * args.batch * seq_len / m.train_tokens_per_s
                row.update(profiled_step(arch, settings))
            out["rows"].append(row)
            print(json.dumps(row, default=str), flush=True)
            with open(args.out, "w") as f:
                json.dump(out, f, indent=1, default=str)
    print("| d_model | T | mode | params | tok/s | spread | MFU | step ms (timed) | wall ms/step (profiled) | GPU kernel ms/step | kernels/step | bits/byte | compile_error |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in out["rows"]:
        head = f"| {r['d_model']} | {r['seq_len']} | {r['compile_mode']} | {r['params'] / 1e6:.1f}M |"
        if r.get("tok_s"):
            print(f"{head} {r['tok_s']:,.0f} | {r['spread']:.1%} | {r['mfu']:.1%} | {r['step_ms']:.2f} | {r['wall_ms_per_step']:.2f} | "
                  f"{r['gpu_ms_per_step']:.2f} | {r['kernels_per_step']:.0f} | {r['bpb']:.4f} | {r['compile_error'][:80]} |")
        else:
            print(f"{head} {r['status']}: {r['reason'][:80]} | | | | | | | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
