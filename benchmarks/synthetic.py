"""GPU benchmark: Zoology's MQAR ordering of the mixers, each architecture in a fixed wall-clock budget.

Two-layer pure stacks (glu channels, GAU without) at d_model 128 train on MQAR (Zoology's layout and vocabulary) at
64 key-value pairs, sequence 256 (training rows on Zoology's mixture of 64, 32 ... 4 pairs, the task's default;
held-out rows at 64), through the proxy's own training function. Per architecture, a short calibration
run measures its training tokens/s; the rest of its budget is split over a MAD-style learning-rate sweep, each run's
token budget sized to end inside its share, and the best accuracy counts. The seeds' ordering to reproduce:
attention (with a short convolution on its keys) >= 0.99, DeltaNet >= 0.9, H3 and Hyena clearly below both.
Both recall rows convolve the keys alone: DeltaNet with one head (a 128 x 128 state for the 64 pairs) and
`qv_conv: false`. fla's arrangement (two heads, q, k and v convolved) follows in a row of its own, for comparison
(benchmarks/RESULTS.md, "DeltaNet on MQAR: CPU probes").

    PYTHONUNBUFFERED=1 python benchmarks/synthetic.py --only "attn + key conv,deltanet,h3,hyena" --out synthetic.json
    python benchmarks/synthetic.py --device cpu --d-model 32 --seq-len 64 --pairs 8 --vocab 256 --seconds 20  # mechanics
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from archsearch import Architecture, BlockSpec, LayerSpec
from archsearch.blocks import REGISTRY
from archsearch.proxy import ProxySettings, TaskSpec, run_proxy

# name -> (mixer, its parameters, channel); rows whose parameters a family lacks are skipped with a note
ARCHS: dict[str, tuple[str, dict, str | None]] = {  # the ordering's rows first, so a cut-short run still has them
    "attn + key conv": ("attn", {"heads": 1, "key_conv": 4}, "glu"),
    "deltanet": ("deltanet", {"heads": 1, "qv_conv": False}, "glu"),
    "h3": ("h3", {}, "glu"),
    "hyena": ("hyena", {}, "glu"),
    "deltanet 2 heads + q/k/v conv": ("deltanet", {"heads": 2}, "glu"),
    "attn": ("attn", {"heads": 1}, "glu"),
    "swa (window 64) + key conv": ("swa", {"heads": 1, "window": 64, "key_conv": 4}, "glu"),
    "brt": ("brt", {"heads": 2}, "glu"),
    "gau": ("gau", {}, None),
}
TARGETS = {"attn + key conv": 0.99, "deltanet": 0.9}  # the seeds' ordering: these at or above, h3 and hyena below
BELOW = ("h3", "hyena")


def stack(mixer: str, params: dict, channel: str | None, d_model: int, n_layers: int) -> Architecture | None:
    if set(params) - set(REGISTRY[mixer].params):
        return None
    layer = LayerSpec(BlockSpec.make(mixer, params, d_model), BlockSpec.make(channel, {}, d_model) if channel else None)
    return Architecture(d_model, (layer,) * n_layers)


def run(arch: Architecture, base: ProxySettings, seconds: float, lrs: list[float]) -> dict:
    """Calibrate tokens/s (which also compiles the kernels), then sweep the learning rates inside `seconds`, each
    run's tokens sized to its share; the best run counts."""
    start = time.perf_counter()
    step_tokens = base.batch_size * base.task_spec().seq_len
    # 40 steps, three timed windows of 4 after a warm-up that holds the compilation
    calibration = run_proxy(arch, dataclasses.replace(base, tokens=40 * step_tokens, evals=1, eval_tokens=step_tokens, timing_steps=4))
    if calibration.status != "ok":
        return {"status": calibration.status, "reason": calibration.reason}
    calibration_s = time.perf_counter() - start
    share = seconds / len(lrs)
    if calibration.train_tokens_per_s is None:
        return {"status": "error", "reason": f"calibration not timed: {calibration.timing_note}"}
    rate = calibration.train_tokens_per_s
    tokens = max(step_tokens, int(rate * share * 0.8))  # the rest: building, evaluating
    runs = []
    for lr in lrs:
        m = run_proxy(arch, dataclasses.replace(base, lr=lr, tokens=tokens, warmup_tokens=max(1, tokens // 10), seconds=share * 0.9))
        runs.append({"lr": lr, "status": m.status, "accuracy": m.accuracy, "tokens": m.tokens_trained, "wall_s": m.wall_seconds,
                     "tokens_per_s": m.train_tokens_per_s, "curve": [round(p["accuracy"], 4) for p in m.history]})
    ok = [r for r in runs if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["accuracy"]) if ok else runs[0]
    return {"status": best["status"], "accuracy": best["accuracy"], "lr": best["lr"], "tokens": best["tokens"],
            "tokens_per_s": best["tokens_per_s"], "wall_s": time.perf_counter() - start, "calibration_s": calibration_s, "runs": runs,
            "params": arch.cost().params, "summary": arch.summary()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--min-pairs", type=int, default=None, help="training rows mix --pairs, /2, /4 ... down to this (the task's "
                    "default: 4; --pairs: one size); held-out rows have --pairs")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=60.0, help="wall-clock budget of each architecture's sweep (after calibration)")
    ap.add_argument("--lrs", default="5e-4,1e-3", help="the learning-rate sweep, comma-separated")
    ap.add_argument("--only", default="", help="comma-separated architecture names to run")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile-mode", default=ProxySettings().compile_mode, help="the proxy's compile_mode (step-graph: one CUDA graph a step)")
    ap.add_argument("--out", default="synthetic.json")
    args = ap.parse_args()
    spec = TaskSpec("mqar", vocab_size=args.vocab, seq_len=args.seq_len, num_kv_pairs=args.pairs, min_kv_pairs=args.min_pairs)
    base = ProxySettings(task="mqar", synthetic=spec, batch_size=args.batch_size, schedule="cosine", weight_decay=0.1, evals=4,
                         eval_tokens=256 * args.seq_len, device=args.device, compile_mode=args.compile_mode)
    lrs = [float(x) for x in args.lrs.split(",")]
    names = [n for n in ARCHS if not args.only or n in args.only.split(",")]
    device = torch.cuda.get_device_name() if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    rows = []
    for name in names:
        mixer, params, channel = ARCHS[name]
        arch = stack(mixer, params, channel, args.d_model, args.layers)
        if arch is None:
            row = {"name": name, "status": "skipped", "reason": f"{mixer} has no parameter {sorted(set(params) - set(REGISTRY[mixer].params))}"}
        else:
            try:
                row = {"name": name, **run(arch, base, args.seconds, lrs)}
            except Exception as e:  # a broken family must not hide the others' numbers
                row = {"name": name, "status": "error", "reason": f"{type(e).__name__}: {e}"[:300]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(args.out, "w") as f:  # after every row: a run cut short keeps what it measured
            json.dump({"device": device, "torch": torch.__version__, "task": spec.settings(), "args": vars(args), "rows": rows}, f, indent=1)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(f"\n{device}, torch {torch.__version__}; MQAR {args.pairs} pairs, seq {args.seq_len}, vocab {args.vocab}; "
          f"{'' if args.min_pairs is None else f'training mixture down to {args.min_pairs} pairs; '}"
          f"d_model {args.d_model}, {args.layers} layers; batch {args.batch_size}; {args.compile_mode} mode; {args.seconds:.0f} s of sweep per architecture; lrs {args.lrs}")
    print("| architecture | params | accuracy | best lr | accuracy per lr | tokens trained | train tok/s | calibration s | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["status"] != "ok":
            print(f"| {r['name']} | | {r['status']}: {r.get('reason', '')[:90]} | | | | | | |")
            continue
        rate = f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "not timed"  # the CPU's short runs time no window
        per_lr = ", ".join(f"{x['lr']:g}: {x['accuracy']:.3f}" if x["status"] == "ok" else f"{x['lr']:g}: {x['status']}" for x in r["runs"])
        print(f"| {r['name']} | {r['params'] / 1e6:.2f}M | {r['accuracy']:.3f} | {r['lr']:g} | {per_lr} | {r['tokens']:,} | "
              f"{rate} | {r['calibration_s']:.0f} | {r['wall_s']:.0f} |")
    acc = {r["name"]: r["accuracy"] for r in rows if r["status"] == "ok"}
    checks = [f"{n} >= {t}: {'yes' if acc.get(n, -1) >= t else 'NO'} ({acc.get(n, 'not run')})" for n, t in TARGETS.items()]
    floor = min((acc[n] for n in TARGETS if n in acc), default=None)
    checks += [f"{n} below both: {'yes' if floor is not None and n in acc and acc[n] < floor else 'NO'} ({acc.get(n, 'not run')})" for n in BELOW]
    print("ordering: " + "; ".join(checks))


if __name__ == "__main__":
    main()
