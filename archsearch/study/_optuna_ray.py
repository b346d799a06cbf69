"""The glue to Optuna and Ray Tune: the only module that touches their internals (private attributes).

Optuna chooses trials (through Ray's `OptunaSearch`, which we subclass to tell Optuna each trial's true outcome),
Ray Tune runs them; the Optuna storage in the run directory is the source of truth for resuming.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from ..errors import ArchsearchError
from ._config import Study
from ._progress import Progress
from ._rundir import RunDir, TrialsTable
from ._samplers import SAMPLERS, ask_feasible, draw
from ._trial import run_trial


class DefineByRun:
    """The space as Optuna sees it: the walk asks the trial for each value; the architecture travels in the config."""

    def __init__(self, study: Study) -> None:
        self.study = study

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        return draw(self.study, trial)  # the walk lives with the samplers, so the tabular replay shares it


class ArchSearch(OptunaSearch):
    """OptunaSearch that asks Optuna for feasible architectures only (unless the study counts infeasible draws) and
    tells it a trial's true outcome: complete, pruned (early-stopped) or failed."""

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials:
            s = self._space.study.search
            self._ot_trials[trial_id], _ = ask_feasible(self._ot_study, self._space, s.counts_infeasible, s.max_draws)
        return super().suggest(trial_id)

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


def open_storage(study: Study, run_dir: RunDir) -> tuple[optuna.storages.BaseStorage, optuna.Study]:
    """The run's Optuna storage and study (created on the first run, loaded on a resume)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = optuna.storages.RDBStorage(run_dir.optuna_url)
    ostudy = optuna.create_study(storage=storage, study_name=study.name, load_if_exists=True,
                                 directions=[o.direction for o in study.objectives])
    return storage, ostudy


def recover(ostudy: optuna.Study) -> int:
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


class Recorder(Callback):
    """Writes each finished trial into the table and prints the study's progress."""

    def __init__(self, table: TrialsTable, progress: Progress) -> None:
        self.table, self.progress = table, progress

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.show([t for t in trials if t is not trial], self.table.add(trial.config, trial.last_result))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.show([t for t in trials if t is not trial], self.table.add(trial.config, trial.last_result, error=_error_line(trial)))

    def on_step_end(self, iteration, trials, **info):
        if self.progress.due():
            self.show(trials, None)

    def show(self, trials, row: dict | None) -> None:
        self.progress.show(list(self.table.rows.values()), sum(t.status == "RUNNING" for t in trials), row)


def _error_line(trial) -> str:
    path = getattr(trial, "error_file", None) or ""
    try:
        lines = [x for x in Path(path).read_text().splitlines() if x.strip()]
        return lines[-1][:300] if lines else "the trial's process failed"
    except OSError:
        return "the trial's process failed"


def start_ray(address: str | None) -> None:
    """Start a Ray of our own, or join the cluster at `address` (see `check_reachable`); one line when it cannot
    be joined."""
    import ray

    # failed and infeasible trials report no objective values; the searcher handles those, so Ray need not insist
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our Recorder prints the progress; Ray's tables would repeat it
    warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument took")
    if ray.is_initialized():
        return
    # "local" starts a Ray of our own: never a leftover one that an interrupted run may still be shutting down
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:  # Ray's errors for an address it cannot join
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArchsearchError(f"--address {address}: cannot join a Ray cluster there ({message})") from None


def check_reachable(address: str) -> None:
    """Fail in seconds, with one line, where Ray would retry an unreachable address for minutes."""
    host_port = address.removeprefix("ray://")
    if host_port == "auto" or ":" not in host_port:
        return
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise ArchsearchError(f"--address {address}: no Ray cluster answers there ({e}); expected HOST:PORT of a running head node") from None


def _trainable(config: dict[str, Any], study: Study, run_dir: str) -> None:
    """The Ray Tune function trainable: one trial, reporting through Ray Tune."""
    from ray import tune

    run_trial(config, study, run_dir, tune.report)


def tune_trials(study: Study, run_dir: RunDir, storage: optuna.storages.BaseStorage, trials: int,
                table: TrialsTable, progress: Progress) -> None:
    """Run `trials` more trials of `study` on Ray Tune, Optuna choosing them; the table records each as it ends."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    s = study.search
    searcher = ArchSearch(space=DefineByRun(study), metric=[o.metric for o in study.objectives],
                          mode=["min" if o.direction == "minimize" else "max" for o in study.objectives],
                          sampler=SAMPLERS[s.sampler].build(s.seed, s.trials, dict(s.sampler_settings)), storage=storage, study_name=study.name)
    es, budget = s.early_stopping, study.proxy.tokens
    # max_t past the budget: ASHA stops a trial that reaches max_t, which would cut off its final report
    scheduler = (ASHAScheduler(time_attr="tokens", metric="val_loss", mode="min", max_t=budget + 1,
                               grace_period=max(1, int(es.grace * budget)), reduction_factor=es.reduction_factor)
                 if es else FIFOScheduler())
    trainable = tune.with_resources(tune.with_parameters(_trainable, study=study, run_dir=str(run_dir.path)),
                                    {"cpu": s.cpu, "gpu": s.gpu})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=s.concurrency),
                                    scheduler=scheduler, num_samples=trials,
                                    trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
        run_config=tune.RunConfig(storage_path=str(run_dir.ray_storage), name=time.strftime("session-%Y%m%d-%H%M%S"),
                                  failure_config=tune.FailureConfig(max_failures=s.retries),
                                  callbacks=[Recorder(table, progress)], verbose=0),
    )
    tuner.fit()
