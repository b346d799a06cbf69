"""Which proxy ranks architectures as 10x its budget does? Proxy variants, and the synthetic suite, against the long
runs of an `archsearch validate` run (issues 14 and 16).

`archsearch validate STUDY --archs N --factor F --out RUN` trains N architectures at the study's proxy and at F
times its budget. This script takes that run's architectures and long runs as the reference, trains each variant
of the proxy (other schedules, learning rates, budgets) on the same architectures, and prints each variant's rank
agreement with the long runs (Kendall tau with its bootstrap interval, top-3 overlap), beside the study proxy's own
and the long runs' ranking at their intermediate evaluations. With --suite, it also trains the synthetic suite on
each architecture (each architecture's task a job of its own; each finished one is appended to OUT's
.suite.jsonl, so a rerun after a cut trains only the rest) and reports the suite score's agreement with the long runs' bits per byte.

    python benchmarks/proxy_fidelity.py studies/gpu.yaml --run runs/val --jobs 6 --suite --out fidelity.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path

import torch

from archsearch.architecture import Architecture
from archsearch.fidelity import rank_agreement
from archsearch.proxy.suite import SCORE, SUITES, Suite, SuiteResult, metric_name
from archsearch.study import RunDir, Study, import_plugins
from archsearch.validate import cpu_share, long_settings, quality_objective, train_parallel

# name -> changes to the study's proxy; "study" is the study's proxy itself (its runs come from the validation)
VARIANTS = {
    "cosine, warm-up 5% (the old default)": {"schedule": "cosine", "warmup_tokens": 0.05},
    "wsd, lr 1e-3": {"lr": 1e-3},
    "wsd, lr 6e-3": {"lr": 6e-3},
    "wsd, 2x budget": {"tokens": 2.0},
    "wsd, 4x budget": {"tokens": 4.0},
}


def variant_settings(proxy, changes: dict):
    """The proxy with a variant's changes: a float for tokens (or warmup_tokens) is a multiple (a share) of the budget."""
    out = dict(changes)
    if isinstance(out.get("tokens"), float):
        out["tokens"] = round(proxy.tokens * out["tokens"])
    if isinstance(out.get("warmup_tokens"), float):
        out["warmup_tokens"] = max(1, round(proxy.tokens * out["warmup_tokens"]))
    return dataclasses.replace(proxy, **out)


def _suite_in_worker(arch_json: str, suite: Suite, plugins: tuple[str, ...]) -> dict:
    """One architecture's suite (here one task of it), in a worker process; a crash is that run's result."""
    try:
        import_plugins(plugins)
        return suite.run(Architecture.from_json(arch_json)).to_dict()
    except Exception as e:  # noqa: BLE001 - one architecture's crash must not end the others' suites
        return SuiteResult(metrics={}, status="error", reason=f"{type(e).__name__}: {e}"[:500]).to_dict()


def suite_results(archs: list[Architecture], suite: Suite, jobs: int, log: Path, plugins: tuple[str, ...] = ()) -> dict[str, dict]:
    """Each architecture's suite result. Each (architecture, task) trains as its own job, `jobs` at a time, and each
    finished one is appended to `log` (a JSON line): a rerun, after a cut, trains only the tasks that log lacks."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    units = {json.dumps(one.to_data(), sort_keys=True, default=str): one for one in suite.per_task()}
    done: dict[tuple[str, str], dict] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if isinstance(record["suite"], str) and record["suite"] in units:  # a whole-suite line of old logs: not reused
                done[record["digest"], record["suite"]] = record["result"]
    todo = [(a, key) for a in archs for key in units if (a.digest, key) not in done]
    print(f"suite: {len(todo)} of {len(archs) * len(units)} task runs to train ({len(done)} in {log})", flush=True)
    # each worker its share of the cores as torch threads, as validate's workers (validate.cpu_share)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=torch.set_num_threads,
                             initargs=(cpu_share(jobs),)) as pool:
        futures = {pool.submit(_suite_in_worker, a.to_json(), units[key], plugins): (a, key) for a, key in todo}
        for future in as_completed(futures):
            (arch, key), result = futures[future], future.result()
            done[arch.digest, key] = result
            with log.open("a") as f:
                f.write(json.dumps({"digest": arch.digest, "suite": key, "result": result}, default=str) + "\n")
            print(f"suite {len(done)}/{len(archs) * len(units)} {arch.summary()} {units[key].tasks[0]}: {result['status']} "
                  f"{result['metrics']} ({result['wall_seconds']:.0f} s)", flush=True)
    out = {}
    for arch in archs:
        parts = [done[arch.digest, key] for key in units]
        metrics = {k: v for part in parts for k, v in part["metrics"].items() if k != SCORE}
        failed = [p for p in parts if p["status"] != "ok"]
        whole = SuiteResult(metrics={**metrics, SCORE: suite.score(metrics)}, status=failed[0]["status"] if failed else "ok",
                            reason="; ".join(p["reason"] for p in failed), wall_seconds=sum(p["wall_seconds"] for p in parts))
        out[arch.digest] = {**whole.to_dict(), "runs": {t: r for p in parts for t, r in p["runs"].items()}}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--run", required=True, help="the run directory of an archsearch validate of this study")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--variants", default=";".join(VARIANTS), help="names of VARIANTS, separated by semicolons")
    ap.add_argument("--suite", action="store_true", help="also the synthetic suite's score against the long runs")
    ap.add_argument("--suite-tokens", type=int, default=300_000)
    ap.add_argument("--suite-tasks", default="all")
    ap.add_argument("--out", default="proxy_fidelity.json")
    args = ap.parse_args()
    study = Study.load(args.study)
    run = RunDir(args.run)
    report = run.read_validation()
    if report is None:
        sys.exit(f"{args.run}: no validation.json; run archsearch validate first")
    metric, direction = quality_objective(study).metric, quality_objective(study).direction
    long = {r["digest"]: r for r in run.validation_records() if r["settings"] == report["settings"]["long"] and r["metrics"]["status"] == "ok"}
    archs = [Architecture.from_json(r["arch"]) for r in long.values()]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    out = {"device": device, "torch": torch.__version__, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
           "command": " ".join(sys.argv), "study": study.name, "metric": metric, "factor": report["factor"],
           "proxy": dataclasses.asdict(study.proxy), "long_tokens": report["long_tokens"], "architectures": len(archs), "rows": []}
    # the reference as the report has it: with validate --long-repeats, the mean over the long runs' seeds
    reference = {r["digest"]: r["long"] for r in report["architectures"]}
    truth = [reference[a.digest] for a in archs]
    short = {r["digest"]: r for r in run.validation_records() if r["settings"] == report["settings"]["proxy"] and r["metrics"]["status"] == "ok"}
    rows = [("study proxy", study.proxy, [short.get(a.digest, {}).get("metrics", {}).get(metric) for a in archs], None)]
    for name in [v for v in args.variants.split(";") if v]:
        settings = variant_settings(study.proxy, VARIANTS[name])
        results = dict(train_parallel([(a, settings) for a in archs], args.jobs, study.plugins))
        rows.append((name, settings, [results[i].get(metric) if results[i]["status"] == "ok" else None for i in range(len(archs))],
                     sum(results[i]["wall_seconds"] for i in range(len(archs)))))
        print(f"variant {name}: {rows[-1][2]} ({rows[-1][3]:.0f} s)", flush=True)
        Path(args.out).write_text(json.dumps({**out, "partial": [(r[0], r[2]) for r in rows], "truth": truth}, indent=1, default=str))
    if args.suite:
        tasks = args.suite_tasks if args.suite_tasks in SUITES else args.suite_tasks.split(",")
        # not timed: the suite measures accuracy, and a timed window would stall every other training on the GPU
        suite = Suite.of(tasks, dataclasses.replace(study.proxy, tokens=args.suite_tokens, compile=False, evals=2, timing_steps=0))
        results = suite_results(archs, suite, args.jobs, Path(args.out).with_suffix(".suite.jsonl"), study.plugins)
        scores, per_task = [], {t: [] for t in suite.tasks}
        for arch in archs:
            metrics = results[arch.digest]["metrics"]
            for t in suite.tasks:
                per_task[t].append(metrics.get(metric_name(t)))
            scores.append(metrics.get(SCORE))  # the suite's own mean, None where a task has no accuracy
        out["suite"] = {"tokens": args.suite_tokens, "tasks": list(suite.tasks), "scores": scores, "per_task": per_task}
        # a higher score should mean a lower loss: rank the negated score against bits per byte
        rows.append((f"suite score ({SCORE})", None, [None if s is None else -s for s in scores], None))
        for t in suite.tasks:
            rows.append((metric_name(t), None, [None if v is None else -v for v in per_task[t]], None))
    print(f"{device}; {len(archs)} architectures; reference: {metric} at {report['long_tokens']:,} tokens ({report['factor']:g}x the study proxy)")
    print("| proxy | tokens | Kendall tau [95% CI] | Spearman rho | top-3 overlap | GPU s (sum of runs) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, settings, values, seconds in rows:
        pairs = [(v, t) for v, t in zip(values, truth, strict=True) if v is not None]
        if len(pairs) < 3:
            print(f"| {name} | - | fewer than 3 finished | | | |")
            continue
        a = rank_agreement([p[0] for p in pairs], [p[1] for p in pairs], direction, 3)
        tau = a.kendall_tau
        tokens = f"{settings.tokens:,}" if settings else "-"
        secs = f"{seconds:.0f}" if seconds else "-"
        print(f"| {name} | {tokens} | {tau.value:.2f} [{tau.low:.2f}, {tau.high:.2f}] | {a.spearman_rho.value:.2f} | {a.top_k_overlap}/3 (n={a.n}) | {secs} |")
        out["rows"].append({"name": name, "settings": dataclasses.asdict(settings) if settings else None, "values": values,
                            "agreement": a.to_dict(), "seconds": seconds})
    for p in report.get("intermediate") or []:
        print(f"| long run at {p['tokens']:,} tokens (its own ranking, quarter held-out set) | {p['tokens']:,} | {p['kendall_tau']:.2f} | | | |")
    long_budget = long_settings(study.proxy, report["factor"]).tokens
    out["truth"] = {"tokens": long_budget, "values": truth, "summaries": [a.summary() for a in archs]}
    Path(args.out).write_text(json.dumps(out, indent=1, default=str))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
