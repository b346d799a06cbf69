"""The synthetic suite: one architecture trained on each task of a suite; each task's accuracy and their mean.

One call per trial: `run_suite(arch, settings)` trains a fresh model per task (and per learning rate of an optional
MAD-style sweep, the best counting) through the proxy's training function, with `settings`' budget, optimiser and
device, and each task's own sizes (MAD's defaults, Zoology's for mqar, or the `TaskSpec`s given). The metrics are
`<task>_accuracy` for each task and `suite_score`, their mean (MAD's score for the six MAD tasks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..architecture import Architecture
from .tasks import TASKS, TaskError, TaskSpec
from .train import Metrics, ProxySettings, run_proxy

MAD = ("in_context_recall", "noisy_recall", "fuzzy_recall", "selective_copy", "compression", "memorization")
SUITES: dict[str, tuple[str, ...]] = {
    "mad": MAD,  # MAD's six tasks
    "all": ("mqar", *MAD),  # Zoology's MQAR beside them
}
DEFAULT_SUITE = "all"
SCORE = "suite_score"


def metric_name(task: str) -> str:
    return f"{task}_accuracy"


def suite_specs(tasks: str | Sequence[str | TaskSpec] = DEFAULT_SUITE, key: str = "proxy.suite") -> tuple[TaskSpec, ...]:
    """The tasks of a suite name, or of a list of task names and specs, with their defaults filled in."""
    if isinstance(tasks, str):
        if tasks not in SUITES:
            raise TaskError(key, f"unknown suite {tasks!r}; expected one of {', '.join(SUITES)}, or a list of tasks")
        tasks = SUITES[tasks]
    if not tasks:
        raise TaskError(key, f"expected at least one task of {', '.join(TASKS)}")
    specs = []
    for i, task in enumerate(tasks):
        if isinstance(task, TaskSpec):
            specs.append(task)
        elif isinstance(task, str) and task in TASKS:
            specs.append(TaskSpec(task))
        else:
            raise TaskError(f"{key}[{i}]", f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    names = [s.name for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TaskError(key, f"{', '.join(twice)} listed twice; each task gives one metric")
    return tuple(specs)


def metric_names(tasks: str | Sequence[str | TaskSpec] = DEFAULT_SUITE) -> list[str]:
    """What `run_suite` reports for these tasks: one accuracy each, then the suite score."""
    return [metric_name(s.name) for s in suite_specs(tasks)] + [SCORE]


@dataclass
class SuiteResult:
    """A suite's metrics (`<task>_accuracy`, `suite_score`) and every proxy run behind them. status is ok unless a
    task could not be measured (oom, error): then its accuracy and the score stay None and `reason` says why. A
    run that diverged counts as accuracy 0 (the architecture did not learn the task at that learning rate)."""

    metrics: dict[str, float | None]
    runs: dict[str, list[Metrics]] = field(default_factory=dict)  # per task, one per learning rate
    status: str = "ok"
    reason: str = ""
    wall_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics), "status": self.status, "reason": self.reason, "wall_seconds": self.wall_seconds,
                "runs": {task: [m.to_dict() for m in ms] for task, ms in self.runs.items()}}


def run_suite(arch: Architecture, settings: ProxySettings | None = None, tasks: str | Sequence[str | TaskSpec] = DEFAULT_SUITE,
              lrs: Sequence[float] | None = None, report: Callable[[dict[str, Any]], None] | None = None) -> SuiteResult:
    """Train `arch` on each task (per learning rate of `lrs`, default settings.lr alone; the best accuracy counts)
    and score it. `report` receives each intermediate evaluation with its "task" and "lr" added."""
    settings = settings or ProxySettings()
    specs = suite_specs(tasks)
    result = SuiteResult(metrics={})
    for spec in specs:
        runs, best, failure = [], None, None
        for lr in lrs or (settings.lr,):
            forward = None if report is None else (lambda point, task=spec.name, lr=lr: report({"task": task, "lr": lr, **point}))
            m = run_proxy(arch, dataclasses.replace(settings, task=spec.name, synthetic=spec, lr=lr), report=forward)
            runs.append(m)
            result.wall_seconds += m.wall_seconds
            if m.status == "ok":
                best = m.accuracy if best is None else max(best, m.accuracy)
            elif m.status == "diverged":
                best = 0.0 if best is None else best
            else:
                failure = f"{spec.name} at lr {lr:g}: {m.status}: {m.reason}"
        result.runs[spec.name] = runs
        if best is None:
            result.status, result.reason = runs[-1].status, failure or ""
        result.metrics[metric_name(spec.name)] = best
    scores = [result.metrics[metric_name(s.name)] for s in specs]
    result.metrics[SCORE] = None if None in scores else sum(scores) / len(scores)
    return result
