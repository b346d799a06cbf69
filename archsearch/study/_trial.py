"""One trial, in its worker process: check the architecture, then train the proxies it needs (over the study's
repeats).

It knows nothing of Ray: `report` sends each intermediate evaluation and the final result to the driver. It
writes nothing into the run directory but its own weights file: the driver keeps the results (an architecture
measured already is not a trial: the driver's ask loop draws another).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..architecture import Architecture
from ..metrics import cost_values
from ..proxy import Metrics, run_proxy
from ._config import Study, import_plugins
from ._repeats import measure
from ._rundir import RunDir

Report = Callable[[dict[str, Any]], None]


def run_trial(config: dict[str, Any], study: Study, run_dir: str, report: Report) -> None:
    """Run the trial that `config` describes (see `DefineByRun`), reporting through `report`."""
    import_plugins(study.plugins)
    base = {"trial": config["trial_number"], "status": "running", "tokens": 0}
    if config["arch"] is None or config["reason"]:
        report({**base, "status": "infeasible", "reason": config["reason"]})
        return
    arch = Architecture.from_json(config["arch"])
    costs = cost_values(arch.cost(study.space.constraints.context, study.space.constraints.dtype_bytes))

    def intermediate(point: dict[str, float]) -> None:
        report({**base, **point, **costs})

    weights = RunDir(run_dir).weights_to_write(config["trial_number"]) if study.search.save_weights else None
    first = config.get("seed", study.proxy.seed)
    result = measure(lambda seed, report, weights: train_proxies(arch, study, seed, report, weights),
                     range(first, first + study.search.repeats), [o.metric for o in study.objectives],
                     report=intermediate, weights_path=weights)
    result.update(costs, trial=config["trial_number"], tokens=result["tokens_trained"])
    report(result)


def train_proxies(arch: Architecture, study: Study, seed: int, report: Report | None, weights: str | None) -> dict[str, Any]:
    """Train the proxies the study needs and return their metrics as one result: its proxy first (each evaluation
    goes to `report`, for early stopping; the weights are its), then its synthetic suite (`<task>_accuracy`,
    `suite_score`), and the wall time of both. With proxy.task: suite, the suite alone: the proxy's figures are
    its first task's first run, tokens and wall time those of all its runs. A trial's own crash is its result."""
    result: dict[str, Any] = {"status": "ok"}
    try:
        if not study.suite_only:
            result = _without_history(run_proxy(arch, dataclasses.replace(study.proxy, seed=seed), report=report, weights_path=weights))
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
