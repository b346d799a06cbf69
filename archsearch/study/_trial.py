"""One trial, in its worker process: check the architecture, then train the proxies it needs (over the study's
repeats).

It knows nothing of Ray: `report` sends each intermediate evaluation and the final result to the driver, and
`files` takes its weights and, with a fidelity ladder, its checkpoints (as bytes: the driver alone writes the run
directory, so the trial may run on any node). The driver keeps the results (an architecture measured already is
not a trial: the driver's ask loop draws another). A rung point of the ladder is reported as the trial's result at
that rung (status ok), since the driver's scheduler may stop the trial there.

A worker process runs trial after trial (imports, corpus and compiled kernels stay warm, unless the study's
search.warm_workers is false), so each trial starts by dropping what the one before left in the process (see
`clear_process_state`): a trial's result does not depend on the trials its process ran before. Ray Tune starts a
new thread for each trial of a worker; `in_trial_thread` runs them all in one, since CUDA graph trees keep their
state per thread and `torch._dynamo.reset()` clears only the calling thread's (in a new thread every second trial
of a warm worker failed to record its graphs on an H200).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from ..architecture import Architecture
from ..metrics import cost_values
from ..proxy import COMPILE_CACHE_ENV, Metrics, run_proxy
from ._config import Study, import_plugins
from ._repeats import measure

Report = Callable[[dict[str, Any]], None]


class TrialFiles(Protocol):
    """What a trial keeps in the run directory, through whoever writes it (`RunDir` in this process; on Ray, an
    actor on the driver's node). Each call returns once the data is written."""

    @property
    def compile_cache(self) -> Path:
        """The study's compile cache: a trial uses it where its node sees the folder, never making it."""

    def write_weights(self, trial: int, data: bytes) -> None: ...

    def save_checkpoint(self, trial: int, data: bytes) -> None: ...

    def load_checkpoint(self, trial: int) -> bytes | None: ...


def run_trial(config: dict[str, Any], study: Study, files: TrialFiles, report: Report) -> None:
    """Run the trial that `config` describes (see `DefineByRun`), reporting through `report`."""
    clear_process_state()
    import_plugins(study.plugins)
    if os.path.isdir(files.compile_cache):  # compiled once per study, not per trial; else torch's cache on this node
        os.environ.setdefault(COMPILE_CACHE_ENV, str(files.compile_cache))
    base = {"trial": config["trial_number"], "status": "running", "tokens": 0}
    if config["arch"] is None or config["reason"]:
        report({**base, "status": "infeasible", "reason": config["reason"]})
        return
    arch = Architecture.from_json(config["arch"])
    costs = cost_values(arch.cost(study.space.constraints.context, study.space.constraints.dtype_bytes))

    def intermediate(point: dict[str, float]) -> None:
        report({**base, **point, **costs, **rung_result(point)})

    weights = functools.partial(files.write_weights, config["trial_number"]) if study.search.save_weights else None
    first = config.get("seed", study.proxy.seed)
    rungs = ladder(study, files, config)  # for the seed that reports: the one the ladder's scheduler promotes
    result = measure(lambda seed, report, weights: train_proxies(arch, study, seed, report, weights, rungs if report else None),
                     range(first, first + study.search.repeats), [o.metric for o in study.objectives],
                     report=intermediate, save_weights=weights)
    result.update(costs, trial=config["trial_number"], tokens=result.get("tokens_trained", 0))  # a crashed trial trained none
    report(result)


class TrialThread:
    """One long-lived thread of a worker process that runs its trials one after another. Why: CUDA graph trees
    keep their state per thread, and `torch._dynamo.reset()` clears only the calling thread's; a trial in a thread
    of its own would start beside the last trial's graphs, which nothing cleared. A daemon thread, as Ray's own
    trial threads are, so that a worker told to exit never waits on a trial."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def call(self, fn: Callable[..., None], *args: Any) -> None:
        """Run fn(*args) in the thread and wait; what it raises, SystemExit included (Ray's stop of a trial, in
        its report), is raised here."""
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="archsearch-trial", daemon=True)
                self._thread.start()
        done: queue.SimpleQueue = queue.SimpleQueue()
        self._work.put((fn, args, done))
        raised = done.get()
        if raised is not None:
            raise raised

    def _serve(self) -> None:
        while True:
            fn, args, done = self._work.get()
            try:
                fn(*args)
                done.put(None)
            except BaseException as e:  # handed to the caller, whose thread Ray watches
                done.put(e)


_TRIAL_THREAD = TrialThread()


def in_trial_thread(config: dict[str, Any], study: Study, files: TrialFiles, report: Report) -> None:
    """`run_trial`, in this process's one trial thread (see `TrialThread`)."""
    _TRIAL_THREAD.call(run_trial, config, study, files, report)


def clear_process_state() -> None:
    """Drop what an earlier trial left in this process: Dynamo's compiled graphs (it counts recompiles of a code
    object across models, so a warm worker would reach its limit and fall back to eager) and the CUDA memory
    cached for freed tensors. The corpus cache stays (keyed by its spec); every run seeds its own generators."""
    gc.collect()  # the model and optimizer of a trial stopped mid-run may sit in a cycle
    if "torch._dynamo" in sys.modules:  # never imported: nothing was compiled
        sys.modules["torch._dynamo"].reset()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def train_proxies(arch: Architecture, study: Study, seed: int, report: Report | None, weights: Callable[[bytes], None] | None,
                  rungs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the proxies the study needs and return their metrics as one result: its proxy first (each evaluation
    goes to `report`, for the fidelity ladder; the weights are its; `rungs`: its ladder arguments, see `ladder`),
    then its synthetic suite (`<task>_accuracy`, `suite_score`), and the wall time of both. With proxy.task: suite,
    the suite alone: the proxy's figures are its first task's first run, tokens and wall time those of all its runs.
    A trial's own crash is its result."""
    result: dict[str, Any] = {"status": "ok"}
    try:
        if not study.suite_only:
            result = _without_history(run_proxy(arch, dataclasses.replace(study.proxy, seed=seed), report=report, save_weights=weights, **(rungs or {})))
        if study.suite is not None and result["status"] == "ok":
            suite = study.suite.run(arch)
            if study.suite_only:
                runs = [m for ms in suite.runs.values() for m in ms]
                result = _without_history(runs[0])
                result.update(accuracy=None, tokens_trained=sum(m.tokens_trained for m in runs), wall_seconds=0.0)
            result.update(suite.metrics, wall_seconds=result["wall_seconds"] + suite.wall_seconds)
            if suite.status != "ok":
                result.update(status=suite.status, reason=suite.reason)
    except Exception as e:  # the study goes on
        result.update(status="error", reason=f"{type(e).__name__}: {e}"[:500])
    result["tokens"] = result.get("tokens_trained", 0)
    return result


def _without_history(metrics: Metrics) -> dict[str, Any]:
    return {k: v for k, v in metrics.to_dict().items() if k != "history"}


def ladder(study: Study, files: TrialFiles, config: dict[str, Any]) -> dict[str, Any]:
    """run_proxy's ladder arguments: the rungs below the budget and the checkpoint (none without a ladder)."""
    if study.fidelity is None:
        return {}
    return {"rungs": study.fidelity.lower, "checkpoint": TrialCheckpoint(files, config["checkpoint_of"])}


@dataclasses.dataclass(frozen=True)
class TrialCheckpoint:
    """The checkpoint of trial `trial` (the one a trial resumes from: its own, or the cut-off trial's it runs
    again), as run_proxy keeps it."""

    files: TrialFiles
    trial: int

    def load(self) -> bytes | None:
        return self.files.load_checkpoint(self.trial)

    def save(self, data: bytes) -> None:
        self.files.save_checkpoint(self.trial, data)


def rung_result(point: dict[str, Any]) -> dict[str, Any]:
    """What makes a rung point the trial's result at that rung, should the scheduler stop it there."""
    return {"status": "ok", "tokens_trained": point["tokens"]} if "rung" in point else {}
