"""GPU benchmark: how many tokens/s N proxy trainings move together on one GPU (issues 17 and 19).

Eight trials sharing an H200 moved about as many tokens/s together as one trial alone (benchmarks/RESULTS.md,
issue 17), and a proxy step at the study's 16 x 256 is host-bound (benchmarks/step_time.py). This script trains
the same architecture in N processes at once, for N in --jobs, untimed (no exclusive windows, so no process waits
for another's timer), after one run that fills the compile cache. Each process logs (time, tokens) every 10 steps;
the aggregate rate is the tokens all processes trained inside the interval where every one of them was training,
over its length. Each process takes its share of the cores as torch threads, as a study's trials do
(`--default-threads`: torch's default of every core). Run it with and without MPS (`nvidia-cuda-mps-control -d`)
to tell GPU time-slicing from host contention.

    PYTHONUNBUFFERED=1 python benchmarks/concurrency.py --jobs 1,2,4,8 --out concurrency.json
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from _common import width_family

from archsearch import Architecture
from archsearch.proxy import COMPILE_CACHE_ENV, ProxySettings, run_proxy
from archsearch.validate import cpu_share


def _train(arch_json: str, settings: ProxySettings) -> dict:
    """One training in a worker process: its status and its (seconds since the epoch, tokens) every 10 steps."""
    marks: list[tuple[float, int]] = []
    m = run_proxy(Architecture.from_json(arch_json), settings, on_step=lambda tokens, _loss: marks.append((time.time(), tokens)))
    return {"status": m.status, "reason": m.reason, "compile_s": m.compile_seconds, "marks": marks}


def tokens_at(marks: list[tuple[float, int]], t: float) -> float:
    """Tokens trained by time t, interpolated between the logged marks (t inside their span)."""
    times = [m[0] for m in marks]
    i = bisect.bisect_right(times, t)
    if i == 0:
        return float(marks[0][1])
    if i == len(marks):
        return float(marks[-1][1])
    (t0, n0), (t1, n1) = marks[i - 1], marks[i]
    return n0 + (n1 - n0) * (t - t0) / (t1 - t0)


def aggregate_rate(runs: list[list[tuple[float, int]]]) -> tuple[float, float]:
    """(tokens/s of all runs together inside the interval where every run was training, that interval's seconds).
    Each run counts from its second mark on, after its first 10 steps, which hold the compile."""
    start = max(marks[1][0] for marks in runs)
    end = min(marks[-1][0] for marks in runs)
    if end <= start:
        raise ValueError("the runs never trained at the same time; give each more tokens")
    return sum(tokens_at(m, end) - tokens_at(m, start) for m in runs) / (end - start), end - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", default="1,2,4,8")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=6_000_000, help="per process")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--default-threads", action="store_true", help="leave each process torch's default threads (every core)")
    ap.add_argument("--out", default="concurrency.json")
    args = ap.parse_args()
    os.environ.setdefault(COMPILE_CACHE_ENV, tempfile.mkdtemp(prefix="archsearch-cc-"))  # shared by the workers
    arch = width_family(args.d_model)
    settings = ProxySettings(batch_size=args.batch, seq_len=args.seq_len, tokens=args.tokens, evals=1, timing_steps=0,
                             eval_tokens=4 * args.batch * args.seq_len, device=args.device)
    out = {"device": torch.cuda.get_device_name() if args.device == "cuda" else args.device, "torch": torch.__version__,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"), "mps": bool(os.environ.get("CUDA_MPS_PIPE_DIRECTORY")),
           "arch": arch.summary(), "batch": args.batch, "seq_len": args.seq_len, "tokens": args.tokens, "rows": []}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:  # fills the compile cache, so every N starts warm
        warm = pool.submit(_train, arch.to_json(), settings).result()
    print(f"warm-up: {warm['status']}, compile {warm['compile_s']} s", flush=True)
    single = None
    for n in map(int, args.jobs.split(",")):
        threads = {} if args.default_threads else {"initializer": torch.set_num_threads, "initargs": (cpu_share(n),)}
        with ProcessPoolExecutor(n, mp_context=context, **threads) as pool:
            results = list(pool.map(_train, [arch.to_json()] * n, [settings] * n))
        failed = [r for r in results if r["status"] != "ok"]
        if failed:
            row = {"jobs": n, "status": failed[0]["status"], "reason": failed[0]["reason"]}
        else:
            rate, seconds = aggregate_rate([r["marks"] for r in results])
            single = rate if n == 1 else single
            row = {"jobs": n, "tokens_per_s": rate, "per_process": rate / n, "vs_one": rate / single if single else None, "overlap_s": seconds}
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    print(f"{out['device']}; {out['arch']}; {args.batch} x {args.seq_len}; MPS {'on' if out['mps'] else 'off'}")
    print("| processes | tokens/s together | per process | vs one process |")
    print("| --- | --- | --- | --- |")
    for r in out["rows"]:
        if "tokens_per_s" in r:
            vs = "-" if r["vs_one"] is None else f"{r['vs_one']:.2f}x"
            print(f"| {r['jobs']} | {r['tokens_per_s']:,.0f} | {r['per_process']:,.0f} | {vs} |")
        else:
            print(f"| {r['jobs']} | {r['status']}: {r['reason'][:60]} | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
