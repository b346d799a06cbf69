"""The synthetic suite: one architecture trained on each task of a suite; each task's accuracy and their mean.

A `Suite` is one proxy run per task (`ProxySettings` naming the task, its sizes and its budget) and an optional
MAD-style learning-rate sweep (the best accuracy counts); `Suite.run(arch)` trains a fresh model per task and
learning rate through the proxy's training function. `run_suite(arch, settings, tasks)` is the same with one set of
training settings for every task, each at its own sizes (MAD's defaults, Zoology's for mqar, or the `TaskSpec`s
given). The metrics are `<task>_accuracy` for each task and `suite_score`, their mean (MAD's score for the six MAD
tasks); `suite_metrics()` declares them, one per registered task, for the metric registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._metric import Metric, Requirement
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
# the training settings a suite (or one of its tasks) may set apart from the proxy's; the rest (data, device,
# inference) are the proxy's, and the sizes (seq_len among them) each task's own
TRAINING = ("tokens", "seconds", "lr", "schedule", "decay", "batch_size", "min_lr_ratio", "warmup_tokens", "weight_decay", "grad_clip", "evals",
            "eval_tokens", "seed", "compile", "compile_mode", "timing_steps")


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


def suite_metrics() -> list[Metric]:
    """The suite's entries in the metric registry: `<task>_accuracy` for every registered task, then `suite_score`.
    Their requirement is met by a `Suite` (or None: no suite) that holds the task."""
    out = [Metric(metric_name(name), "maximize", "ratio", "suite", f"share of the answers right on {name} ({task.doc})",
                  label=f"{name} accuracy", detail="{:.3f}", objective=True,
                  requires=Requirement(lambda suite, name=name: suite is not None and name in suite.tasks,
                                       f"{name} among the suite's tasks, where the study lists them (proxy.task, suite.tasks)"))
           for name, task in TASKS.items()]
    out.append(Metric(SCORE, "maximize", "ratio", "suite", "mean of the suite's task accuracies", label="suite score",
                      detail="{:.3f}", objective=True, requires=Requirement(lambda suite: suite is not None, "the synthetic suite")))
    return out


def task_settings(settings: ProxySettings, spec: TaskSpec) -> ProxySettings:
    """`settings` training `spec`'s task at its sizes."""
    return dataclasses.replace(settings, task=spec.name, synthetic=spec, seq_len=spec.seq_len)


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


@dataclass(frozen=True)
class Suite:
    """A suite as a study runs it: one proxy run per task (each `ProxySettings` with its task, its `TaskSpec` and
    its budget) and the learning rates each is trained at (empty: its own lr alone; the best accuracy counts)."""

    runs: tuple[ProxySettings, ...]
    lrs: tuple[float, ...] = ()

    @classmethod
    def of(cls, tasks: str | Sequence[str | TaskSpec] = DEFAULT_SUITE, settings: ProxySettings | None = None,
           lrs: Sequence[float] = ()) -> Suite:
        """The tasks (a suite name, or task names and specs) trained with one set of settings, each at its sizes."""
        return cls(tuple(task_settings(settings or ProxySettings(), spec) for spec in suite_specs(tasks)), tuple(lrs))

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(r.task for r in self.runs)

    def metric_names(self) -> list[str]:
        return [metric_name(t) for t in self.tasks] + [SCORE]

    def to_data(self) -> dict[str, Any]:
        """The suite as a study's `suite:` section that reads back to it: each task's sizes and training settings."""
        training = [k for k in TRAINING if not (self.lrs and k == "lr")]  # a sweep sets the learning rates
        tasks = {r.task: {**{k: v for k, v in r.synthetic.settings().items() if k != "name"}, **{k: getattr(r, k) for k in training}}
                 for r in self.runs}
        return {"tasks": tasks, **({"lrs": list(self.lrs)} if self.lrs else {})}

    def run(self, arch: Architecture, report: Callable[[dict[str, Any]], None] | None = None) -> SuiteResult:
        """Train `arch` on each task at each learning rate and score it. `report` receives each intermediate
        evaluation with its "task" and "lr" added."""
        result = SuiteResult(metrics={})
        for settings in self.runs:
            task, runs, best, failure = settings.task, [], None, None
            for lr in self.lrs or (settings.lr,):
                forward = None if report is None else (lambda point, task=task, lr=lr: report({"task": task, "lr": lr, **point}))
                m = run_proxy(arch, dataclasses.replace(settings, lr=lr), report=forward)
                runs.append(m)
                result.wall_seconds += m.wall_seconds
                if m.status == "ok":
                    best = m.accuracy if best is None else max(best, m.accuracy)
                elif m.status == "diverged":
                    best = 0.0 if best is None else best
                else:
                    failure = f"{task} at lr {lr:g}: {m.status}: {m.reason}"
            result.runs[task] = runs
            if best is None:
                result.status, result.reason = runs[-1].status, failure or ""
            result.metrics[metric_name(task)] = best
        result.metrics[SCORE] = self.score(result.metrics)
        return result

    def score(self, metrics: dict[str, float | None]) -> float | None:
        """The suite score of task accuracies (`<task>_accuracy` keys): their mean, None while one is missing."""
        scores = [metrics.get(metric_name(t)) for t in self.tasks]
        return None if None in scores else sum(scores) / len(scores)

    def per_task(self) -> tuple[Suite, ...]:
        """This suite's tasks as one-task suites with its learning rates: units of work that can run apart."""
        return tuple(Suite((settings,), self.lrs) for settings in self.runs)


def run_suite(arch: Architecture, settings: ProxySettings | None = None, tasks: str | Sequence[str | TaskSpec] = DEFAULT_SUITE,
              lrs: Sequence[float] | None = None, report: Callable[[dict[str, Any]], None] | None = None) -> SuiteResult:
    """Train `arch` on each task (per learning rate of `lrs`, default settings.lr alone; the best accuracy counts)
    and score it. `report` receives each intermediate evaluation with its "task" and "lr" added."""
    return Suite.of(tasks, settings, lrs or ()).run(arch, report)
