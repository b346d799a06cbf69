"""`archsearch run`: Ray Tune runs the trials, Optuna chooses them, the run directory keeps everything.

Resuming: the Optuna storage (SQLite in the run directory) is the source of truth. Trials it holds as finished are
kept; trials it holds as running were cut off, so they are closed as interrupted and their parameters queued again;
the new Tuner runs only the trials still missing from the count.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from .architecture import Architecture
from .errors import ArchsearchError
from .front import pareto_mask
from .sampling import Infeasible, OptunaSampler, sample, space_size
from .study import METRICS, TABLE_COLUMNS, Study, _import_plugins, freeze

FINISHED = ("ok", "infeasible", "diverged", "oom", "error", "pruned")


# --- inside a trial's process ---------------------------------------------------------------------------------------


def trial_function(config: dict[str, Any], study: Study, run_dir: str) -> None:
    """One trial: check the architecture, reuse a cached result, or train the proxy. Reports through Ray Tune."""
    from ray import tune

    from .proxy import Metrics, evaluate

    _import_plugins(study.plugins)
    base = {"trial": config["trial_number"], "status": "running", "tokens": 0}
    if config["arch"] is None or config["reason"]:
        tune.report({**base, "status": "infeasible", "reason": config["reason"]})
        return
    arch = Architecture.from_json(config["arch"])
    cost = arch.cost(study.space.constraints.context, study.space.constraints.dtype_bytes)
    costs = {"params": cost.params, "active_params": cost.active_params, "flops_per_token": cost.flops_per_token, "state_bytes": cost.state_bytes}
    cached = _cache_get(run_dir, arch.digest, study.proxy_key)
    if cached is not None:
        tune.report({**base, **cached, **costs, "cached": True})
        return

    def report(point: dict[str, float]) -> None:
        tune.report({**base, **point, **costs})

    weights = None
    if study.search.save_weights:
        os.makedirs(os.path.join(run_dir, "weights"), exist_ok=True)
        weights = os.path.join(run_dir, "weights", f"trial_{config['trial_number']}.safetensors")
    try:
        metrics = evaluate(arch, study.proxy, report=report, weights_path=weights)
    except Exception as e:  # a trial's own crash is its result; the study goes on
        metrics = Metrics(status="error", reason=f"{type(e).__name__}: {e}"[:500])
    result = {k: v for k, v in metrics.to_dict().items() if k != "history"}
    result.update(costs, trial=config["trial_number"], tokens=metrics.tokens_trained, cached=False)
    if metrics.status == "ok":
        _cache_put(run_dir, arch.digest, study.proxy_key, result)
    tune.report(result)


def _cache_path(run_dir: str) -> str:
    return os.path.join(run_dir, "cache.jsonl")


def _cache_get(run_dir: str, digest: str, proxy_key: str) -> dict | None:
    """A finished result for this architecture under these proxy settings, if any trial produced one."""
    path = _cache_path(run_dir)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            if entry["digest"] == digest and entry["proxy"] == proxy_key:
                return entry["result"]
    return None


def _cache_put(run_dir: str, digest: str, proxy_key: str, result: dict) -> None:
    with open(_cache_path(run_dir), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # trials finish concurrently; one line each, whole
        f.write(json.dumps({"digest": digest, "proxy": proxy_key, "result": result}) + "\n")


# --- in the driver --------------------------------------------------------------------------------------------------


class _Grid(optuna.samplers.BruteForceSampler):
    """Optuna's brute-force walk of a conditional space. The run already caps the trials at the grid's size, and
    the stock sampler's way to end (study.stop) only works inside Study.optimize, which Ray Tune does not use."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def _sampler(study: Study):
    s = study.search
    table = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=s.seed, population_size=max(4, min(50, s.trials // 4))),
        "tpe": lambda: optuna.samplers.TPESampler(seed=s.seed, multivariate=True, group=True, n_startup_trials=max(2, min(10, s.trials // 4))),
        "gp": lambda: optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=max(2, min(10, s.trials // 4))),
        "random": lambda: optuna.samplers.RandomSampler(seed=s.seed),
        "grid": lambda: _Grid(seed=s.seed),
    }
    return table[s.sampler]()


class DefineByRun:
    """The space as Optuna sees it: the walk asks the trial for each value; the architecture travels in the config."""

    def __init__(self, study: Study) -> None:
        self.study = study

    def __call__(self, trial) -> dict[str, Any]:
        number = trial.number
        try:
            arch = sample(self.study.space, OptunaSampler(trial))
        except Infeasible as e:
            return {"trial_number": number, "arch": None, "digest": "", "reason": str(e)}
        broken = self.study.violations(arch)
        return {"trial_number": number, "arch": arch.to_json(), "digest": arch.digest, "reason": "; ".join(broken)}


class ArchSearch(OptunaSearch):
    """OptunaSearch that tells Optuna a trial's true outcome: complete, pruned (early-stopped) or failed."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        self._completed_trials.add(trial_id)
        if self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished():
            return  # the sampler closed it already (a grid that ran out of points)
        status = (result or {}).get("status", "error")
        values = [(result or {}).get(m) for m in self.metric]
        state = optuna.trial.TrialState.FAIL
        if status == "ok" and all(v is not None and math.isfinite(v) for v in values):
            state = optuna.trial.TrialState.COMPLETE
        elif status == "running" and not error:
            state = optuna.trial.TrialState.PRUNED
        ot_trial.set_user_attr("status", "pruned" if status == "running" and not error else status)
        if result and result.get("reason"):
            ot_trial.set_user_attr("reason", str(result["reason"])[:500])
        self._ot_study.tell(ot_trial, values if state == optuna.trial.TrialState.COMPLETE else None, state=state)


def _recover(ostudy) -> int:
    """Close trials cut off by an interrupted run and queue their parameters again; return the finished count."""
    storage = ostudy._storage
    finished = 0
    for t in ostudy.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING:
            storage.set_trial_user_attr(t._trial_id, "status", "interrupted")
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            ostudy.enqueue_trial(t.params, user_attrs={"rerun_of": t.number}, skip_if_exists=False)
        elif t.state.is_finished() and t.user_attrs.get("status") != "interrupted":
            finished += 1
    return finished


class _Table:
    """The trials table: one row per finished trial, rewritten as trials finish (the driver is its only writer)."""

    def __init__(self, run_dir: Path, study: Study) -> None:
        import pandas as pd

        self.path = run_dir / "trials.csv"
        self.rows: dict[int, dict[str, Any]] = {}
        if self.path.exists() and self.path.stat().st_size:
            for row in pd.read_csv(self.path).to_dict("records"):
                self.rows[int(row["trial"])] = row
        self.objectives = study.objectives

    def add(self, config: dict[str, Any], result: dict[str, Any] | None, error: str | None = None) -> dict[str, Any]:
        result = dict(result or {})
        status = result.get("status", "error")
        if error is not None:
            status, result["reason"] = "error", error
        elif status == "running":
            status = "pruned"
        arch = config.get("arch")
        summary = Architecture.from_json(arch).summary() if arch else ""
        result.setdefault("tokens_trained", result.get("tokens"))  # a pruned trial's last report says how far it got
        row = {c: result.get(c) for c in TABLE_COLUMNS}
        row.update(trial=config["trial_number"], status=status, reason=result.get("reason") or config.get("reason") or "",
                   summary=summary, digest=config.get("digest", ""), arch=arch or "", cached=bool(result.get("cached", False)))
        row.update({f"p:{k}": v for k, v in config.items() if k not in ("trial_number", "arch", "digest", "reason")})
        self.rows[row["trial"]] = row
        self.write()
        return row

    def write(self) -> None:
        import pandas as pd

        frame = pd.DataFrame(sorted(self.rows.values(), key=lambda r: r["trial"]))
        columns = TABLE_COLUMNS + sorted(c for c in frame.columns if c not in TABLE_COLUMNS)
        tmp = self.path.with_suffix(".tmp")
        frame.reindex(columns=columns).to_csv(tmp, index=False)
        os.replace(tmp, self.path)  # readers never see half a table


class Recorder(Callback):
    """Writes each finished trial into the table and prints the study's progress."""

    def __init__(self, table: _Table, total: int) -> None:
        self.table, self.total = table, total
        self.start = time.time()
        self.last_print = 0.0
        self.finished_now = 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.show([t for t in trials if t is not trial], self.table.add(trial.config, trial.last_result))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.show([t for t in trials if t is not trial], self.table.add(trial.config, trial.last_result, error=_error_line(trial)))

    def on_step_end(self, iteration, trials, **info):
        if time.time() - self.last_print > 30:
            self.show(trials, None)

    def show(self, trials, row: dict | None) -> None:
        if row is not None:
            self.finished_now += 1
        self.last_print = time.time()
        rows = list(self.table.rows.values())
        objectives = self.table.objectives
        failed = sum(r["status"] not in ("ok", "pruned") for r in rows)
        running = sum(t.status == "RUNNING" for t in trials)
        elapsed = time.time() - self.start
        left = self.total - len(rows)
        eta = f", about {_duration(elapsed / self.finished_now * left)} left" if self.finished_now and left > 0 else ""
        ok = [r for r in rows if r["status"] == "ok" and all(_number(r.get(o.metric)) for o in objectives)]
        best = []
        for o in objectives:
            if ok:
                v, t = (min if o.direction == "minimize" else max)((r[o.metric], r["trial"]) for r in ok)
                best.append(f"{o.metric} {_short(v)} (#{t})")
        values = [[r[o.metric] for o in objectives] for r in ok]
        front = int(pareto_mask(np.array(values, dtype=float), [o.direction for o in objectives]).sum()) if ok else 0
        head = f"trial {row['trial']} {row['status']}: {row['summary'] or str(row['reason'])[:80]}\n" if row else ""
        print(f"{head}[{_duration(elapsed)}] {len(rows)}/{self.total} finished, {running} running, {failed} failed{eta}"
              f"{'; best ' + ', '.join(best) if best else ''}; front {front}", flush=True)


def _error_line(trial) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        lines = [x for x in Path(path).read_text().splitlines() if x.strip()]
        return lines[-1][:300] if lines else "the trial's process failed"
    except OSError:
        return "the trial's process failed"


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _short(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def run(study_path: str, out: str | None = None, address: str | None = None, trials: int | None = None) -> Path:
    """Run (or resume) a study; returns the run directory."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    study = Study.load(study_path)
    run_dir = Path(out or study.out).resolve()
    if (run_dir / "study.yaml").exists():
        kept = Study.load(run_dir / "study.yaml")
        if _canonical(kept.frozen) != _canonical(study.frozen):
            raise ArchsearchError(f"{run_dir}: this run directory holds a different study; resume it with the same study file or choose another --out")
        study = kept
        print(f"resuming {run_dir}")
    else:
        freeze(study, run_dir)
    total = trials or study.search.trials
    if study.search.sampler == "grid":
        size = space_size(study.space)
        if size.assignments is None:
            raise ArchsearchError(f"{study.file}: search.sampler: grid needs a finite space that can be enumerated; it has {size.describe()}")
        if total > size.assignments:
            print(f"the grid has {size.assignments} points: running {size.assignments} trials, not {total}")
            total = size.assignments
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = optuna.storages.RDBStorage(f"sqlite:///{run_dir / 'optuna.db'}")
    ostudy = optuna.create_study(storage=storage, study_name=study.name, load_if_exists=True,
                                 directions=[o.direction for o in study.objectives])
    done = _recover(ostudy)
    table = _Table(run_dir, study)
    remaining = total - done
    if remaining <= 0:
        print(f"{run_dir}: all {total} trials are finished")
        table.write()
        return run_dir

    # failed and infeasible trials report no objective values; the searcher handles those, so Ray need not insist
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our Recorder prints the progress; Ray's tables would repeat it
    warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument took")
    if not ray.is_initialized():
        # "local" starts a Ray of our own: never a leftover one that an interrupted run may still be shutting down
        if address:
            _check_reachable(address)
        try:
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:  # Ray's errors for an address it cannot join
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ArchsearchError(f"--address {address}: cannot join a Ray cluster there ({message})") from None
    searcher = ArchSearch(space=DefineByRun(study), metric=[o.metric for o in study.objectives],
                                 mode=["min" if o.direction == "minimize" else "max" for o in study.objectives],
                                 sampler=_sampler(study), storage=storage, study_name=study.name)
    es = study.search.early_stopping
    budget = study.proxy.tokens
    # max_t past the budget: ASHA stops a trial that reaches max_t, which would cut off its final report
    scheduler = (ASHAScheduler(time_attr="tokens", metric="val_loss", mode="min", max_t=budget + 1,
                               grace_period=max(1, int(es.grace * budget)), reduction_factor=es.reduction_factor)
                 if es else FIFOScheduler())
    resources = {"cpu": study.search.cpu, "gpu": study.search.gpu}
    trainable = tune.with_resources(tune.with_parameters(trial_function, study=study, run_dir=str(run_dir)), resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=study.search.concurrency),
                                    scheduler=scheduler, num_samples=remaining,
                                    trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
        run_config=tune.RunConfig(storage_path=str(run_dir / "ray"), name=time.strftime("session-%Y%m%d-%H%M%S"),
                                  failure_config=tune.FailureConfig(max_failures=study.search.retries),
                                  callbacks=[Recorder(table, total)], verbose=0),
    )
    print(f"study {study.name}: {remaining} of {total} trials to run, {study.search.concurrency} at a time, "
          f"sampler {study.search.sampler}; run directory {run_dir}", flush=True)
    tuner.fit()
    table.write()
    return run_dir


def _check_reachable(address: str) -> None:
    """Fail in seconds, with one line, where Ray would retry an unreachable address for minutes."""
    import socket

    host_port = address.removeprefix("ray://")
    if host_port == "auto" or ":" not in host_port:
        return
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise ArchsearchError(f"--address {address}: no Ray cluster answers there ({e}); expected HOST:PORT of a running head node") from None


def _canonical(data: dict) -> str:
    return json.dumps(data, sort_keys=True, default=str)


__all__ = ["run", "trial_function", "METRICS", "FINISHED"]
