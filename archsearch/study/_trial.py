"""One trial, in its worker process: check the architecture, reuse a known result, or train the proxy.

It knows nothing of Ray: `report` sends each intermediate evaluation and the final result to the driver. It
writes nothing into the run directory but its own weights file and, with a fidelity ladder, its checkpoint: the
driver keeps the results (and the result an earlier trial of the same architecture measured comes in the config,
as `cached`). A rung point of the ladder is reported as a finished result of that rung (status ok), since the
driver's scheduler may stop the trial there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..architecture import Architecture
from ..metrics import cost_values
from ..proxy import Metrics, run_proxy
from ._config import Study, import_plugins
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
    if config.get("cached"):
        report({**base, **json.loads(config["cached"]), **costs, "trial": config["trial_number"], "cached": True})
        return

    def intermediate(point: dict[str, float]) -> None:
        report({**base, **point, **costs, **rung_result(point)})

    weights = RunDir(run_dir).weights_to_write(config["trial_number"]) if study.search.save_weights else None
    try:
        metrics = run_proxy(arch, study.proxy, report=intermediate, weights_path=weights, **ladder(study, run_dir, config))
    except Exception as e:  # a trial's own crash is its result; the study goes on
        metrics = Metrics(status="error", reason=f"{type(e).__name__}: {e}"[:500])
    result = {k: v for k, v in metrics.to_dict().items() if k != "history"}
    result.update(costs, trial=config["trial_number"], tokens=metrics.tokens_trained, cached=False)
    report(result)


def ladder(study: Study, run_dir: str, config: dict[str, Any]) -> dict[str, Any]:
    """run_proxy's ladder arguments: the rungs below the budget and the checkpoint (none without a ladder)."""
    if study.fidelity is None:
        return {}
    return {"rungs": study.fidelity.lower, "checkpoint": RunDir(run_dir).checkpoint_to_write(config["checkpoint_of"])}


def rung_result(point: dict[str, Any]) -> dict[str, Any]:
    """What makes a rung point the trial's result at that rung, should the scheduler stop it there."""
    return {"status": "ok", "tokens_trained": point["tokens"]} if "rung" in point else {}
