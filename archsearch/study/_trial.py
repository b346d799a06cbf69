"""One trial, in its worker process: check the architecture, then train the proxy (over the study's repeats).

It knows nothing of Ray: `report` sends each intermediate evaluation and the final result to the driver. It
writes nothing into the run directory but its own weights file: the driver keeps the results (an architecture
measured already is not a trial: the driver's ask loop draws another).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..architecture import Architecture
from ..metrics import cost_values
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
    result = measure(arch, study.proxy, range(first, first + study.search.repeats), [o.metric for o in study.objectives],
                     report=intermediate, weights_path=weights)
    result.update(costs, trial=config["trial_number"], tokens=result["tokens_trained"])
    report(result)
