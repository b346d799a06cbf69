"""The fidelity ladder as a Ray Tune scheduler: asynchronous successive halving ranked on all objectives (MO-ASHA).

A trial reports a rung point (a result with "rung") at each rung below its budget. The scheduler records the
trial's objective values there and lets it go on only if it is among the best `keep` share of the trials that
reached that rung so far, by `archsearch.fidelity.promote` (non-dominated sorting, then crowding distance); the
first trial at a rung always goes on (as in ASHA; unless it lacks a value). Any other result goes on. Throughput is measured once, inside
the first rung, so a trial's throughput objectives keep the value its first rung point carried.

A trial is known by the trial whose checkpoint it trains from (`checkpoint_of` in its config): a trial queued again
after a kill resumes from the cut-off one's last rung and reports that rung again, which then replaces the cut-off
trial's point there rather than joining the rung as a second trial.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from ..fidelity import promote
from ..metrics import METRICS
from ._config import Fidelity, Objective


class LadderScheduler(FIFOScheduler):
    """Promote or stop each trial at each rung below the top (see the module's docstring). `seen`: rung points of
    trials from earlier sessions of the run, (key, rung, result) with the key `trial_key` gives, so that a resumed
    study ranks against them too."""

    def __init__(self, objectives: Sequence[Objective], fidelity: Fidelity, seen: Iterable[tuple[str, int, Mapping[str, Any]]] = ()) -> None:
        super().__init__()
        self.metrics = [o.metric for o in objectives]
        self.directions = [o.direction for o in objectives]
        self.throughput = [m for m in self.metrics if METRICS[m].unit == "tokens/s"]
        self.fidelity = fidelity
        self.values: list[dict[str, list[float]]] = [{} for _ in fidelity.lower]  # per rung: trial key -> objective values
        self.first: dict[str, dict[str, float]] = {}  # per trial: the throughput its first rung point measured
        for key, rung, result in seen:
            self.record(key, rung, result)

    def record(self, key: str, rung: int, result: Mapping[str, Any]) -> list[float]:
        """The trial's objective values at `rung` (NaN where the point lacks one), kept in the rung's pool."""
        first = self.first.setdefault(key, {m: result[m] for m in self.throughput if _number(result.get(m))})
        values = [float(first[m]) if m in first else float(result[m]) if _number(result.get(m)) else math.nan for m in self.metrics]
        self.values[rung][key] = values
        return values

    def promoted(self, key: str, rung: int) -> bool:
        """Whether the trial is among the rung's best `keep` share so far (at least one; never one lacking a value)."""
        keys = list(self.values[rung])
        chosen = promote(np.array([self.values[rung][k] for k in keys]), self.directions, self.fidelity.keep)
        return keys.index(key) in set(chosen.tolist())

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        rung = result.get("rung")
        if not isinstance(rung, int | np.integer) or not 0 <= rung < len(self.values):
            return TrialScheduler.CONTINUE  # an ordinary evaluation, or the top rung's final result
        key = trial_key(getattr(trial, "config", None) or {}, trial.trial_id)
        self.record(key, int(rung), result)
        return TrialScheduler.CONTINUE if self.promoted(key, int(rung)) else TrialScheduler.STOP

    def debug_string(self) -> str:
        counts = ", ".join(f"{len(v)} at {tokens:,} tokens" for v, tokens in zip(self.values, self.fidelity.lower, strict=True))
        return f"Using the fidelity ladder (keep {self.fidelity.keep:g}): {counts}."


def trial_key(config: Mapping[str, Any], default: str) -> str:
    """How the ladder knows a trial: by the trial whose checkpoint it trains from, else by `default`."""
    return f"trial:{config['checkpoint_of']}" if "checkpoint_of" in config else default


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
