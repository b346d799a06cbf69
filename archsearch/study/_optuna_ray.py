"""The glue to Optuna and Ray Tune: the only module that touches their internals (private attributes).

Optuna chooses trials (through Ray's `OptunaSearch`, which we subclass to tell Optuna each trial's true outcome),
Ray Tune runs them; the Optuna storage in the run directory is the source of truth for resuming.
"""

from __future__ import annotations

import importlib.util
import math
import os
import pickle
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.stopper import Stopper

from ..errors import ArchsearchError
from ._config import TRACKING_PACKAGES, Study
from ._driver_files import DriverFiles
from ._progress import Progress
from ._rundir import ROW_ATTR, RunDir, TrialsTable, trial_row
from ._samplers import KNOWN, REDRAWN, SAMPLERS, SpaceExhausted, ask_feasible, draw
from ._trial import in_trial_thread

CHECKPOINT_ATTR = "checkpoint_of"  # the Optuna user attribute naming the trial whose checkpoint a trial resumes from


class DefineByRun:
    """The space as Optuna sees it: the walk asks the trial for each value; the architecture travels in the config,
    with the proxy seed its first repeat trains with. It keeps, from the storage's rows, what is known of each
    architecture measured already (`known`: what Optuna was told of it), so that a draw of one is not a trial."""

    def __init__(self, study: Study, rows: list[dict[str, Any]]) -> None:
        self.study = study
        self.known: dict[str, tuple[optuna.trial.TrialState, list[float] | None]] = {}
        self.next_seed: dict[str, int] = {}  # by digest: the first seed not trained yet (search.remeasure)
        self.seeds: dict[int, int] = {}  # by trial number: the first seed given to the trial
        for row in rows:
            self.learn(row)

    def learn(self, row: dict[str, Any]) -> None:
        digest = row.get("digest")
        if not digest:
            return
        if row["status"] in ("ok", "infeasible"):  # what a new draw would measure again (errors may not recur)
            self.known.setdefault(digest, outcome(row, self.study))  # pruned where the ladder stopped it: not trained again
        if isinstance(row.get("seed"), int):
            self.next_seed[digest] = max(self.next_seed.get(digest, 0), row["seed"] + self.study.search.repeats)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        config = draw(self.study, trial)  # the walk lives with the samplers, so the tabular replay shares it
        config["seed"] = self.seed(trial.number, config["digest"])
        if self.study.fidelity:  # whose checkpoint the trial resumes from: its own, or the cut-off trial's it runs again
            if CHECKPOINT_ATTR not in trial.user_attrs:  # `recover` copies it into the trial that runs this one again
                trial.set_user_attr(CHECKPOINT_ATTR, trial.number)
            config["checkpoint_of"] = trial.user_attrs[CHECKPOINT_ATTR]
        return config

    def seed(self, number: int, digest: str) -> int:
        """The proxy seed of a trial's first repeat: the study's, or with search.remeasure the first one that no
        earlier trial of the architecture trained with (a re-measurement is new seeds, not the same run again)."""
        base = self.study.proxy.seed
        if not self.study.search.remeasure or not digest:
            return base
        if number not in self.seeds:
            self.seeds[number] = max(base, self.next_seed.get(digest, base))
            self.next_seed[digest] = self.seeds[number] + self.study.search.repeats
        return self.seeds[number]


def below_top(row: dict[str, Any], study: Study) -> bool:
    """Whether the fidelity ladder stopped this trial below its top rung (its values are of a smaller budget)."""
    return study.fidelity is not None and study.fidelity.stopped(row)


def outcome(row: dict[str, Any], study: Study) -> tuple[optuna.trial.TrialState, list[float] | None]:
    """What Optuna is told of a finished trial, from its row: complete with the objectives' values, pruned (also a
    trial the fidelity ladder stopped below its top rung: its values are not comparable) or failed."""
    values = [row.get(o.metric) for o in study.objectives]
    if row["status"] == "ok" and below_top(row, study):
        return optuna.trial.TrialState.PRUNED, None
    if row["status"] == "ok" and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return optuna.trial.TrialState.COMPLETE, [float(v) for v in values]
    if row["status"] == "pruned":
        return optuna.trial.TrialState.PRUNED, None
    return optuna.trial.TrialState.FAIL, None


def _store(storage: optuna.storages.BaseStorage, trial_id: int, row: dict[str, Any]) -> None:
    """The row goes into the storage before the outcome: a driver killed in between leaves a running trial that
    carries its row, which `recover` finishes with it."""
    storage.set_trial_user_attr(trial_id, "status", row["status"])
    if row.get("reason"):
        storage.set_trial_user_attr(trial_id, "reason", str(row["reason"])[:500])
    storage.set_trial_user_attr(trial_id, ROW_ATTR, row)


class ArchSearch(OptunaSearch):
    """OptunaSearch that tells Optuna a trial's true outcome (complete, pruned or failed) from its table row, which
    it stores first: the `Recorder` calls `finish` once the row is made (Ray calls the searcher before the
    callbacks, and only the callbacks see a failed trial's error). It asks Optuna for feasible architectures only,
    unless the study counts infeasible draws, and for ones not measured yet (`known`), unless it remeasures."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.measuring: dict[str, str] = {}  # Ray trial id -> the digest a running trial measures
        self.exhausted: str | None = None  # why the search ended before its trials: no new architecture in max_draws draws

    # Tune pickles its searcher twice: with the tuner (for Tuner.restore) and at each experiment checkpoint (`save`).
    # archsearch restores neither way: a study resumes from its Optuna storage. Optuna 5.1's NSGA-II sampler holds a
    # thread lock and cannot be pickled, so the sampler, the Optuna study and the running trials (each holds the
    # study) stay out of both copies.
    NOT_PICKLED = ("_sampler", "_ot_study", "_ot_trials")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self.NOT_PICKLED}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.exhausted:
            return Searcher.FINISHED
        if trial_id not in self._ot_trials:
            s = self._space.study.search
            try:
                trial, config = ask_feasible(self._ot_study, self._space, s.counts_infeasible, s.max_draws, self.known)
            except SpaceExhausted as e:
                self.exhausted = str(e)
                return Searcher.FINISHED  # Ray Tune lets the running trials finish, then ends the run
            self._ot_trials[trial_id] = trial
            self.measuring[trial_id] = config["digest"]
        return super().suggest(trial_id)

    def known(self, digest: str) -> tuple[optuna.trial.TrialState, list[float] | None] | None:
        """What Optuna is told of a draw of `digest` instead of training it: its stored result; a failure (which
        the samplers ignore) while a running trial measures it; None for a new one, or always with remeasure."""
        if self._space.study.search.remeasure:
            return None
        if digest in self._space.known:
            return self._space.known[digest]
        if digest in self.measuring.values():
            return optuna.trial.TrialState.FAIL, None
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        return None  # `finish` tells Optuna, with the row

    def finish(self, trial_id: str, row: dict[str, Any]) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        self._completed_trials.add(trial_id)
        self.measuring.pop(trial_id, None)
        storage = self._ot_study._storage
        if storage.get_trial(ot_trial._trial_id).state.is_finished():
            return  # the sampler closed it already (a grid that ran out of points)
        _store(storage, ot_trial._trial_id, row)
        study = self._space.study
        state, values = outcome(row, study)
        if state == optuna.trial.TrialState.PRUNED and below_top(row, study) and len(study.objectives) == 1:
            value = row.get(study.objectives[0].metric)  # a pruned trial's last intermediate value is what TPE learns from
            if isinstance(value, (int, float)) and math.isfinite(value):
                storage.set_trial_intermediate_value(ot_trial._trial_id, int(row.get("tokens_trained") or 0), float(value))
        self._ot_study.tell(ot_trial, values, state=state)


def open_storage(study: Study, run_dir: RunDir) -> tuple[optuna.storages.BaseStorage, optuna.Study]:
    """The run's Optuna storage and study (created on the first run, loaded on a resume); one line when optuna.db
    is not a storage."""
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        storage = optuna.storages.RDBStorage(run_dir.optuna_url)
        ostudy = optuna.create_study(storage=storage, study_name=study.name, load_if_exists=True,
                                     directions=[o.direction for o in study.objectives])
        ostudy.get_trials(deepcopy=False)
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as e:
        message = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ArchsearchError(f"{run_dir.path / 'optuna.db'}: not a readable Optuna storage ({message}); move it away to start the run again") from None
    return storage, ostudy


def recover(ostudy: optuna.Study, study: Study) -> int:
    """Close trials cut off by an interrupted run and return the finished count: one that stored its row is
    finished with it; one that did not is closed as interrupted and its parameters queued again. Draws that were
    asked again (status `redrawn`: infeasible; `known`: measured already) are not trials of the study."""
    storage = ostudy._storage
    finished = 0
    for t in ostudy.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING and isinstance(t.user_attrs.get(ROW_ATTR), dict):
            state, values = outcome(t.user_attrs[ROW_ATTR], study)
            storage.set_trial_state_values(t._trial_id, state, values)
            finished += 1
        elif t.state == optuna.trial.TrialState.RUNNING:
            storage.set_trial_user_attr(t._trial_id, "status", "interrupted")
            storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            kept = {k: v for k, v in t.user_attrs.items() if k not in ("status", "reason", ROW_ATTR)}  # a baseline stays one
            ostudy.enqueue_trial(t.params, user_attrs={**kept, "rerun_of": t.number}, skip_if_exists=False)
        elif t.state.is_finished() and t.user_attrs.get("status") not in ("interrupted", REDRAWN, KNOWN):
            finished += 1
    return finished


def resumed_seed(seed: int, stored: int) -> int:
    """The sampler's seed for a run that finds `stored` trials in the storage: the study's own on the first run, a
    different one on each resume, so that a random sampler does not draw again what it drew before (model-based
    samplers learn from the stored trials as well)."""
    return seed if stored == 0 else int(np.random.SeedSequence([seed, stored]).generate_state(1)[0])


class Recorder(Callback):
    """Finishes each trial: makes its row, stores it and tells Optuna (`ArchSearch.finish`), rewrites the table and
    prints the study's progress. A write that fails (disk full) stops the run; `failure` says why."""

    def __init__(self, table: TrialsTable, progress: Progress, searcher: ArchSearch, define: DefineByRun) -> None:
        self.table, self.progress, self.searcher, self.define = table, progress, searcher, define
        self.failure: str | None = None

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finish(trials, trial, trial_row(trial.config, trial.last_result))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finish(trials, trial, trial_row(trial.config, trial.last_result, error=_error_line(trial)))

    def finish(self, trials, trial, row: dict[str, Any]) -> None:
        if self.failure:
            return
        import sqlalchemy.exc

        try:
            self.searcher.finish(trial.trial_id, row)
            self.define.learn(row)
            self.table.add(row)
            if "checkpoint_of" in trial.config:
                self.table.run_dir.remove_checkpoint(trial.config["checkpoint_of"])
        except (OSError, sqlalchemy.exc.OperationalError) as e:
            self.failure = f"{self.table.run_dir.path}: cannot write ({_first_line(e)}); every trial finished before is kept: free space and run again to resume"
            return
        self.show([t for t in trials if t is not trial], row)

    def on_step_end(self, iteration, trials, **info):
        if self.progress.due():
            self.show(trials, None)

    def show(self, trials, row: dict | None) -> None:
        self.progress.show(list(self.table.rows.values()), sum(t.status == "RUNNING" for t in trials), row)


class _StopOnFailure(Stopper):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.recorder.failure is not None


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


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


def check_resources(study: Study) -> None:
    """Refuse, in one line, a trial that needs more CPUs or GPUs than the Ray cluster has (Ray would wait for them
    forever, at "0 running"), or a CUDA proxy that asks for no GPU."""
    import ray

    s, device = study.search, study.proxy.device
    if device.startswith("cuda") and s.gpu == 0:
        raise ArchsearchError(f"{study.file}: proxy.device: {device} needs a GPU in each trial; set search.resources: {{gpu: N}} (a fraction shares one)")
    have = ray.cluster_resources()
    for key, want in (("cpu", s.cpu), ("gpu", s.gpu)):
        if want > have.get(key.upper(), 0.0):
            raise ArchsearchError(f"{study.file}: search.resources.{key}: each trial needs {want:g}, but the Ray cluster has "
                                  f"{have.get(key.upper(), 0.0):g}{' (no CUDA device)' if key == 'gpu' and not have.get('GPU') else ''}")


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


class TensorBoardLogger(TBXLoggerCallback):
    """Ray Tune's TensorBoard logger, writing each trial's events to the run directory's TensorBoard folder under
    the study's trial number (Ray's own would bury them in its session folders, under its trial ids)."""

    def __init__(self, run_dir: RunDir) -> None:
        super().__init__()
        self.run_dir = run_dir

    def log_trial_start(self, trial) -> None:
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        folder = self.run_dir.tensorboard_trial(trial.config["trial_number"])
        self._trial_writer[trial] = self._summary_writer_cls(str(folder), flush_secs=30)
        self._trial_result[trial] = {}


def _wandb_logger(study: Study, run_dir: RunDir) -> Callback:
    from ray.air.integrations.wandb import WandbLoggerCallback

    # WANDB_PROJECT and WANDB_MODE (offline: nothing leaves the machine until `wandb sync`) are wandb's own settings;
    # wandb.init writes into DIR/wandb
    return WandbLoggerCallback(project=os.environ.get("WANDB_PROJECT", study.name), group=study.name,
                               dir=str(run_dir.wandb.parent))


# search.tracking's names -> the Ray Tune logger callback of each
TRACKERS: dict[str, Callable[[Study, RunDir], Callback]] = {
    "tensorboard": lambda study, run_dir: TensorBoardLogger(run_dir),
    "wandb": _wandb_logger,
}


def check_tracking(study: Study) -> None:
    """Refuse, in one line, a tracker whose package is not installed (before anything starts)."""
    for name in study.search.tracking:
        package = TRACKING_PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            raise ArchsearchError(f"{study.file}: search.tracking: {name} needs the {package} package, which is not installed: "
                                  f"pip install 'archsearch[tracking]'")


def _trainable(config: dict[str, Any], study: Study, files: DriverFiles) -> None:
    """The Ray Tune function trainable: one trial, reporting through Ray Tune, its files going to the driver."""
    from ray import tune

    in_trial_thread(config, study, files, tune.report)


def tune_trials(study: Study, run_dir: RunDir, storage: optuna.storages.BaseStorage, trials: int,
                table: TrialsTable, progress: Progress, stored: int) -> None:
    """Run `trials` more trials of `study` on Ray Tune, Optuna choosing them (`stored`: the trials the storage held
    at the start); the table records each as it ends. One line when a write fails (disk full)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from ._ladder import LadderScheduler, trial_key

    s = study.search
    define = DefineByRun(study, list(table.rows.values()))
    searcher = ArchSearch(space=define, metric=[o.metric for o in study.objectives],
                          mode=["min" if o.direction == "minimize" else "max" for o in study.objectives],
                          sampler=SAMPLERS[s.sampler].build(resumed_seed(s.seed, stored), s.trials, dict(s.sampler_settings)),
                          storage=storage, study_name=study.name)
    recorder = Recorder(table, progress, searcher, define)
    seen = [(trial_key(point["config"], f"seen:{point['config'].get('trial_number')}"), rung, point) for rung, point in run_dir.rung_points()
            if rung < study.fidelity.top] if study.fidelity else []
    scheduler = LadderScheduler(study.objectives, study.fidelity, seen) if study.fidelity else FIFOScheduler()
    run_dir.make_compile_cache()
    files = DriverFiles.start(run_dir)
    trainable = tune.with_resources(tune.with_parameters(_trainable, study=study, files=files),
                                    {"cpu": s.cpu, "gpu": s.gpu})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=s.concurrency),
                                    scheduler=scheduler, num_samples=trials, reuse_actors=study.search.warm_workers,
                                    trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
        run_config=tune.RunConfig(storage_path=str(run_dir.ray_storage), name=time.strftime("session-%Y%m%d-%H%M%S"),
                                  failure_config=tune.FailureConfig(max_failures=s.retries),
                                  stop=_StopOnFailure(recorder), verbose=0,
                                  callbacks=[recorder, *(TRACKERS[name](study, run_dir) for name in s.tracking)]),
    )
    try:
        tuner.fit()
    finally:
        files.stop()
    if study.fidelity:
        run_dir.remove_checkpoints()  # no trial runs now; one saved for a stopped trial after its row was made may be left
    if recorder.failure:
        raise ArchsearchError(recorder.failure)
    if searcher.exhausted:
        print(f"study {study.name}: stopped after {len(table.rows)} of {progress.total} trials: {searcher.exhausted}", flush=True)
