"""The proxy's validation: does the study's short proxy rank architectures as F times its budget would?

N architectures (drawn from the study's space under its constraints, or a finished run's ok trials) are trained
with the study's proxy and with F times its token budget. The report (`validation.json` in the run directory) gives
Kendall's tau and Spearman's rho between the two rankings with bootstrap intervals, the top-k overlap, the long
runs' own ranking at each of their evaluations against their final one (how early the ranking settles), and how
well learning-curve extrapolation of the proxy runs predicts the long ones. With `search.repeats` N the proxy runs
with the study's N seeds and ranks on their mean, as the study does; the long runs use the first seed, or with
`long_repeats` M the first M seeds: the reference is their mean, and the report gives how well those seeds rank
against each other, the ceiling of any proxy's agreement with them.

The trainings run one after another in this process, or with `jobs` > 1 that many at once, each in a fresh
process of its own (small proxies leave most of a GPU idle; a training that crashes its process or its CUDA context
takes no other down), the longest first. Every finished training is appended to the run directory's validation
records at once, so a killed validation retrains only what had not finished.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .architecture import Architecture
from .curves import extrapolate
from .errors import ArchsearchError
from .fidelity import rank_agreement
from .proxy import Metrics, ProxySettings, run_proxy
from .sampling import Infeasible, sample
from .study import Objective, RunDir, Study, import_plugins, load_run, over_seeds

QUALITY = ("bits_per_byte", "val_loss", "perplexity", "accuracy")  # what a run's evaluations (its history) measure
DEFAULT_ARCHS = 10
DEFAULT_FACTOR = 10.0
DEFAULT_TOP_K = 3
DRAWS_PER_ARCH = 50  # draws tried per wanted architecture before a space is declared too small or too constrained


class ValidationError(ArchsearchError):
    """A validation that cannot be run as asked (too few architectures, a run of another study)."""


def quality_objective(study: Study) -> Objective:
    """What the validation ranks on: the study's first objective that the proxy's evaluations measure (else the
    validation loss)."""
    for o in study.objectives:
        if o.metric in QUALITY:
            return o
    return Objective("val_loss", "minimize")


def long_settings(proxy: ProxySettings, factor: float) -> ProxySettings:
    """The proxy at `factor` times its budget (a wall-clock budget scales too); everything else unchanged."""
    seconds = None if proxy.seconds is None else proxy.seconds * factor
    return dataclasses.replace(proxy, tokens=max(1, round(proxy.tokens * factor)), seconds=seconds)


def draw_architectures(study: Study, n: int, seed: int = 0) -> list[Architecture]:
    """n distinct architectures of the study's space that meet its constraints, drawn with seeds seed, seed+1, ..."""
    found: dict[str, Architecture] = {}
    for s in range(seed, seed + DRAWS_PER_ARCH * n):
        try:
            arch = sample(study.space, s)
        except Infeasible:
            continue
        if not study.violations(arch):
            found.setdefault(arch.digest, arch)
        if len(found) == n:
            break
    return list(found.values())


def run_architectures(run_path: str | Path, n: int) -> list[Architecture]:
    """The first n distinct architectures among a finished run's ok trials."""
    run = load_run(run_path, require_trials=True)
    ok = run.trials[run.trials["status"] == "ok"].sort_values("trial").drop_duplicates("digest")
    return [Architecture.from_json(a) for a in ok["arch"].head(n)]


def open_run_dir(study: Study, out: str | Path | None, existing: bool = False) -> RunDir:
    """The run directory the validation belongs to: a run of this study (`existing`: it must be one), or a new one
    (the study frozen there, so that `archsearch run` on it later runs the same study)."""
    run_dir = RunDir(Path(out or study.out).resolve())
    if existing:
        load_run(run_dir.path, require_trials=True)  # one line if it is no run directory, or has no trials yet
    if run_dir.has_study():
        if _canonical(run_dir.study().frozen) != _canonical(study.frozen):
            raise ValidationError(f"{run_dir.path}: this run directory holds a different study; validate it with the study file it was run with, or choose another --out")
    else:
        run_dir.freeze(study)
    return run_dir


def _canonical(data: dict) -> str:
    return json.dumps(data, sort_keys=True, default=str)


Train = Callable[[Architecture, ProxySettings, Callable[[int, float], None]], Metrics]


def _train(arch: Architecture, settings: ProxySettings, on_step: Callable[[int, float], None]) -> Metrics:
    try:
        return run_proxy(arch, settings, on_step=on_step)
    except ArchsearchError:
        raise  # bad settings or data fail every training alike: one line, not N recorded errors
    except Exception as e:  # an architecture's own crash is its result; the validation goes on
        return Metrics(status="error", reason=f"{type(e).__name__}: {e}"[:500])


def _train_in_worker(send, arch_json: str, settings: ProxySettings, plugins: tuple[str, ...], train: Train, threads: int) -> None:
    """One training in a worker process (the study's plugins imported there first), on `threads` CPU threads, its
    metrics sent back."""
    try:
        torch.set_num_threads(threads)
        import_plugins(plugins)
        metrics = train(Architecture.from_json(arch_json), settings, lambda tokens, loss: None).to_dict()
    except BaseException as e:  # noqa: BLE001 - whatever ends the training is its result, sent back
        metrics = Metrics(status="error", reason=f"{type(e).__name__}: {e}"[:500]).to_dict()
    send.send(metrics)
    send.close()


def validate(study: Study, run_dir: RunDir, archs: Sequence[Architecture], factor: float = DEFAULT_FACTOR,
             k: int = DEFAULT_TOP_K, progress: bool = True, train: Train = _train, jobs: int = 1, long_repeats: int = 1,
             reuse: Sequence[RunDir] = (), retrain: Collection[str] = ()) -> dict[str, Any]:
    """Train each architecture at the proxy's budget and at `factor` times it (skipping trainings the run directory
    already records), `jobs` at a time, then write and return the report. With `long_repeats` N the long runs
    train with N seeds: the reference is their mean, and the report says how well the seeds rank against each other
    (no proxy can rank better against a reference than the reference ranks against itself).

    A training recorded in a `reuse` run directory with the same architecture and settings is copied here instead of
    trained again: proxies of several budgets validated against one set of long runs pay for those once. Architectures
    holding a block of a family in `retrain` are trained again all the same (their records predate a fix to it)."""
    if study.suite_only:
        raise ValidationError(f"{study.file}: proxy.task: suite trains one model per task, and a validation ranks one proxy at "
                              "two budgets: validate a task at a time (proxy.task: TASK), or the LM proxy of a study beside its suite")
    if len(archs) < 3:
        raise ValidationError(f"{study.file}: only {len(archs)} architecture(s) to validate on; a ranking needs at least 3")
    short, long = study.proxy, long_settings(study.proxy, factor)
    # the proxy as the study measures it: over its repeats' seeds (seed, seed + 1, ...), ranked on their mean
    shorts, longs = _seeded("proxy", short, study.search.repeats), _seeded("long", long, long_repeats)
    settings = {**shorts, **longs}
    # each training as its model trains it, keyed by that: runs that train alike (a narrow model under lr_width and
    # without it) are one record
    trained = {(arch.digest, f): p.for_width(arch.d_model) for arch in archs for f, p in settings.items()}
    keys = {at: dataclasses.replace(study, proxy=p).proxy_key for at, p in trained.items()}
    done = {(r["digest"], r["settings"]): r for r in run_dir.validation_records()}
    missing = {(digest, key) for (digest, _), key in keys.items()} - done.keys()
    stale = {arch.digest for arch in archs if arch.families() & set(retrain)}
    reused = {(r["digest"], r["settings"]): r for other in reuse for r in other.validation_records()
              if (r["digest"], r["settings"]) in missing and r["digest"] not in stale}
    for key, record in reused.items():
        run_dir.add_validation_record(record)
        done[key] = record
    if reuse:
        again = f"; {len(stale)} architecture(s) with {', '.join(sorted(retrain))} trained again" if retrain else ""
        print(f"reused {len(reused)} recorded training(s) from {', '.join(str(o.path) for o in reuse)}{again}", flush=True)
    todo = [_Job(i, arch, f, trained[arch.digest, f], keys[arch.digest, f]) for i, arch in enumerate(archs) for f in settings
            if (arch.digest, keys[arch.digest, f]) not in done]
    if todo:
        with_seeds = f" ({len(shorts)} seeds)" if len(shorts) > 1 else ""
        long_seeds = f" ({len(longs)} seeds)" if len(longs) > 1 else ""
        print(f"validating the proxy of {study.name} on {len(archs)} architectures at {short.tokens:,}{with_seeds} and {long.tokens:,}{long_seeds} tokens: "
              f"{len(todo)} of {len(settings) * len(archs)} trainings to run, {'one at a time' if jobs == 1 else f'{jobs} at a time'}; "
              f"run directory {run_dir.path}", flush=True)
    runner = _run_all if jobs == 1 else functools.partial(_run_pooled, jobs=jobs, plugins=study.plugins)
    for record in runner(todo, len(archs), train, progress):
        run_dir.add_validation_record(record)
        done[(record["digest"], record["settings"])] = record
    metric = quality_objective(study).metric
    seeds, long_seeds = [p.seed for p in shorts.values()], [p.seed for p in longs.values()]
    record = {(arch.digest, f): done[(arch.digest, keys[arch.digest, f])] for arch in archs for f in settings}
    pairs = [(arch, _mean_over_seeds([record[arch.digest, f] for f in shorts], seeds, metric),
              _mean_over_seeds([record[arch.digest, f] for f in longs], long_seeds, metric)) for arch in archs]
    report = summarize(study, pairs, factor, k)
    report["settings"] = {f: dataclasses.replace(study, proxy=settings[f]).proxy_key for f in ("proxy", "long")}
    report["repeats"], report["long_repeats"] = len(shorts), len(longs)
    if len(longs) > 1:
        per_seed = [[_ok_value(record[arch.digest, f], metric) for arch in archs] for f in longs]
        report["reference_agreement"] = reference_agreement(per_seed, long_seeds, report["direction"], k)
    run_dir.write_validation(report)
    return report


def _seeded(fidelity: str, settings: ProxySettings, n: int) -> dict[str, ProxySettings]:
    """`settings` with seeds seed, seed + 1, ... (n of them), by record name: the fidelity, then "FIDELITY seed S"."""
    return {fidelity if i == 0 else f"{fidelity} seed {settings.seed + i}": dataclasses.replace(settings, seed=settings.seed + i) for i in range(n)}


def _mean_over_seeds(records: Sequence[dict[str, Any]], seeds: Sequence[int], metric: str) -> dict[str, Any]:
    """One proxy record from each seed's, its metrics those a study's trial gets over its repeats (`over_seeds`)."""
    if len(records) == 1:
        return records[0]
    return {**records[0], "metrics": over_seeds([r["metrics"] for r in records], seeds, [metric])}


def _ok_value(record: dict[str, Any], metric: str) -> float | None:
    return record["metrics"].get(metric) if record["metrics"]["status"] == "ok" else None


def reference_agreement(per_seed: Sequence[Sequence[float | None]], seeds: Sequence[int], direction: str, k: int = DEFAULT_TOP_K) -> dict[str, Any]:
    """How well the long runs' seeds rank the architectures against each other: the rank agreement of every pair
    of seeds over the architectures both finished, and the mean of their Kendall taus (None under 3 such)."""
    pairs = []
    for i in range(len(seeds)):
        for j in range(i + 1, len(seeds)):
            both = [(a, b) for a, b in zip(per_seed[i], per_seed[j], strict=True) if a is not None and b is not None]
            if len(both) >= 3:
                a = rank_agreement([x for x, _ in both], [y for _, y in both], direction, k)
                pairs.append({"seeds": [seeds[i], seeds[j]], **a.to_dict()})
    taus = [p["kendall_tau"]["value"] for p in pairs]
    return {"pairs": pairs, "kendall_tau_mean": float(np.mean(taus)) if taus else None}


class _Job(NamedTuple):
    """One training of a validation: the index of its architecture, which fidelity, and its settings and key."""

    index: int
    arch: Architecture
    fidelity: str
    settings: ProxySettings
    key: str


def _record(job: _Job, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"digest": job.arch.digest, "settings": job.key, "fidelity": job.fidelity, "arch": job.arch.to_json(),
            "summary": job.arch.summary(), "metrics": metrics}


def _token_bar(show: bool):
    """The progress bar of a validation's trainings, counted in tokens."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} tokens"),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=not show)


def cpu_share(processes: int) -> int:
    """The torch threads each of `processes` processes may use so that together they fill this process's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, processes))


def train_parallel(jobs: Sequence[tuple[Architecture, ProxySettings]], at_once: int, plugins: tuple[str, ...] = (),
                   train: Train = _train, progress: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
    """Train each (architecture, settings) job, `at_once` at a time, each in a fresh spawned process, the longest
    first; yield (the job's index, its metrics as a dict) as each finishes. A process that dies without a result (a
    crash, a kill) is that job's error; the others go on. Interrupted, it leaves no process training.

    Each process gets its share of this machine's cores as torch threads. Left at torch's default of every core,
    two CPU trainings at once on 2 cores took 5.7x as long as one after the other (benchmarks/RESULTS.md)."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    threads = cpu_share(at_once)
    pending = sorted(range(len(jobs)), key=lambda i: -jobs[i][1].tokens)
    running: dict[Any, tuple[Any, int]] = {}
    try:
        with _token_bar(progress and bool(jobs)) as bar:
            task = bar.add_task(f"{at_once} at a time", total=sum(s.tokens for _, s in jobs), status="")
            while pending or running:
                while pending and len(running) < at_once:
                    i = pending.pop(0)
                    receive, send = context.Pipe(duplex=False)
                    process = context.Process(target=_train_in_worker, args=(send, jobs[i][0].to_json(), jobs[i][1], plugins, train, threads), daemon=True)
                    process.start()
                    send.close()
                    running[receive] = (process, i)
                for receive in wait(list(running)):
                    process, i = running.pop(receive)
                    try:
                        metrics = receive.recv()
                    except EOFError:
                        process.join()
                        metrics = Metrics(status="error", reason=f"the training's process died (exit code {process.exitcode})").to_dict()
                    receive.close()
                    process.join()
                    bar.update(task, advance=jobs[i][1].tokens, status=f"job {i + 1}/{len(jobs)}: {metrics['status']}")
                    yield i, metrics
    finally:
        for process, _ in running.values():
            process.terminate()
            process.join()


def _run_pooled(todo, n_archs: int, train: Train, progress: bool, jobs: int, plugins: tuple[str, ...]):
    """`train_parallel` over the validation's trainings, yielding each record as it finishes."""
    work = [(job.arch, job.settings) for job in todo]
    for i, metrics in train_parallel(work, jobs, plugins, train, progress):
        yield _record(todo[i], metrics)


def _run_all(todo, n_archs: int, train: Train, progress: bool):
    """Train each job in turn, yielding its record as it finishes."""
    with _token_bar(progress and bool(todo)) as bar:
        task = bar.add_task("validation", total=sum(job.settings.tokens for job in todo), status="")
        before = 0
        for job in todo:
            bar.update(task, description=f"arch {job.index + 1}/{n_archs} {job.fidelity}")

            def on_step(tokens: int, loss: float, before=before) -> None:
                bar.update(task, completed=before + tokens, status=f"loss {loss:.3f}")

            metrics = train(job.arch, job.settings, on_step)
            before += job.settings.tokens
            bar.update(task, completed=before)
            yield _record(job, metrics.to_dict())


def summarize(study: Study, pairs: Sequence[tuple[Architecture, dict, dict]], factor: float, k: int = DEFAULT_TOP_K) -> dict[str, Any]:
    """The report from each architecture's (proxy record, long record): rank agreement, early rankings of the long
    runs, and the extrapolation's error and agreement."""
    objective = quality_objective(study)
    metric, direction = objective.metric, objective.direction
    rows, ok = [], []
    for arch, short, long in pairs:
        s, lg = short["metrics"], long["metrics"]
        row = {"digest": arch.digest, "summary": arch.summary(), "proxy": s.get(metric), "long": lg.get(metric),
               "proxy_status": s["status"], "long_status": lg["status"], "predicted": None}
        if direction == "minimize" and s["status"] == "ok" and lg["status"] == "ok":
            row["predicted"] = extrapolate(s["history"], lg["tokens_trained"], metric)
        rows.append(row)
        if s["status"] == "ok" and lg["status"] == "ok" and row["proxy"] is not None and row["long"] is not None:
            ok.append((row, lg["history"]))
    report: dict[str, Any] = {
        "study": study.name, "proxy_key": study.proxy_key, "metric": metric, "direction": direction, "factor": factor,
        "proxy_tokens": study.proxy.tokens, "long_tokens": long_settings(study.proxy, factor).tokens,
        "architectures": rows, "compared": len(ok),
    }
    if len(ok) < 3:
        report["agreement"] = None  # fewer than three finished both budgets: no ranking to speak of
        return report
    proxy_values = [r["proxy"] for r, _ in ok]
    long_values = [r["long"] for r, _ in ok]
    report["agreement"] = rank_agreement(proxy_values, long_values, direction, k).to_dict()
    report["intermediate"] = _intermediate(ok, metric)
    predicted = [r["predicted"] for r, _ in ok]
    if all(p is not None for p in predicted):
        errors = np.array(predicted) - np.array(long_values)
        report["extrapolation"] = {
            "mean_abs_error": float(np.abs(errors).mean()),
            "mean_rel_error": float(np.abs(errors / np.array(long_values)).mean()),
            "mean_abs_error_of_proxy": float(np.abs(np.array(proxy_values) - np.array(long_values)).mean()),
            "agreement": rank_agreement(predicted, long_values, direction, k).to_dict(),
        }
    return report


def _intermediate(ok: Sequence[tuple[dict, list[dict]]], metric: str) -> list[dict[str, float]]:
    """Kendall's tau between the long runs' ranking at each of their evaluations and their final ranking."""
    from scipy.stats import kendalltau

    histories = [[p for p in h if p.get(metric) is not None] for _, h in ok]
    final = [r["long"] for r, _ in ok]
    out = []
    for i in range(min(len(h) for h in histories) - 1):  # the last evaluation is the final one
        values = [h[i][metric] for h in histories]
        out.append({"tokens": int(np.median([h[i]["tokens"] for h in histories])), "kendall_tau": float(kendalltau(values, final).statistic)})
    return out


def describe(report: dict[str, Any]) -> list[str]:
    """The lines `archsearch validate` prints."""
    seeds = f" (mean of {report['repeats']} seeds)" if report.get("repeats", 1) > 1 else ""
    long_seeds = f", mean of {report['long_repeats']} seeds" if report.get("long_repeats", 1) > 1 else ""
    lines = [f"validation of {report['study']}'s proxy: {report['metric']} at {report['proxy_tokens']:,} tokens{seeds} against "
             f"{report['long_tokens']:,} ({report['factor']:g}x{long_seeds}), {report['compared']} of {len(report['architectures'])} architectures finished both"]
    width = max(len(r["summary"]) for r in report["architectures"])
    lines.append(f"  {'architecture'.ljust(width)}  {'proxy':>9}  {'long':>9}  {'predicted':>9}")
    for r in sorted(report["architectures"], key=lambda r: (r["long"] is None, r["long"] or 0.0)):
        cells = [_cell(r["proxy"], r["proxy_status"]), _cell(r["long"], r["long_status"]), _cell(r["predicted"], "ok")]
        lines.append(f"  {r['summary'].ljust(width)}  " + "  ".join(f"{c:>9}" for c in cells))
    a = report.get("agreement")
    if a is None:
        lines.append("fewer than 3 architectures finished both budgets: no ranking to compare")
        return lines
    lines.append(f"Kendall tau {_interval(a['kendall_tau'])}, Spearman rho {_interval(a['spearman_rho'])} "
                 f"(95% bootstrap intervals); top-{a['k']} overlap {a['top_k_overlap']} of {a['k']}")
    ref = report.get("reference_agreement")
    if ref and ref["kendall_tau_mean"] is not None:
        lines.append(f"the long runs' seeds against each other: Kendall tau {_num(ref['kendall_tau_mean'])} (mean of {len(ref['pairs'])} "
                     "pairs of seeds), the ceiling of any proxy's tau against them")
    if report.get("intermediate"):
        lines.append("long runs' ranking against their final one: "
                     + ", ".join(f"{p['tokens']:,} tokens tau {_num(p['kendall_tau'])}" for p in report["intermediate"]))
    e = report.get("extrapolation")
    if e:
        lines.append(f"power-law extrapolation of the proxy runs: mean error {e['mean_abs_error']:.4f} ({100 * e['mean_rel_error']:.1f}%; "
                     f"the proxy's own {e['mean_abs_error_of_proxy']:.4f}), Kendall tau {_interval(e['agreement']['kendall_tau'])}")
    return lines


def front_line(report: dict[str, Any] | None, study: Study) -> str:
    """What `archsearch front` says about the proxy's ranking: its validated tau, or that it is unvalidated."""
    if report is None:
        return f"proxy unvalidated: `archsearch validate STUDY.yaml --from-run RUN` measures its ranking against {DEFAULT_FACTOR:g}x its budget"
    if report.get("proxy_key") != study.proxy_key:
        return "proxy unvalidated: validation.json is of other proxy settings; run archsearch validate again"
    a = report.get("agreement")
    if a is None:
        return f"proxy validation inconclusive: only {report['compared']} architectures finished both budgets"
    line = (f"proxy validated: Kendall tau {_interval(a['kendall_tau'])} against {report['factor']:g}x its budget "
            f"on {report['metric']} over {a['n']} architectures (top-{a['k']} overlap {a['top_k_overlap']})")
    ceiling = (report.get("reference_agreement") or {}).get("kendall_tau_mean")
    if ceiling is not None:  # what the proxy's tau is worth: no proxy ranks better than the reference repeats
        line += f"; the long runs' own seeds agree at tau {ceiling:.2f}"
    return line


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _interval(i: dict[str, float | None]) -> str:
    return f"{_num(i['value'])} [{_num(i['low'])}, {_num(i['high'])}]"


def _cell(value: float | None, status: str) -> str:
    return status if status != "ok" else ("-" if value is None else f"{value:.4f}")
