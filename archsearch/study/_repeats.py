"""A trial's proxy measurement over `search.repeats` seeds: each seed's run, and the mean and spread over them.

The first seed reports its intermediate evaluations (what the fidelity ladder promotes on) and saves the weights; the
others run silently. The trial's figures are the means over the seeds that finished ok (`fidelity.seed_spread`),
with each objective's standard deviation and count beside it; when every seed failed, the first failure is the
trial's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..fidelity import seed_spread, seed_spreads
from ..metrics import METRICS

SUMMED = ("wall_seconds",)  # a trial's wall time is all its seeds' runs; every other figure is a mean


SaveWeights = Callable[[bytes], None]
Train = Callable[[int, Callable[[dict[str, float]], None] | None, SaveWeights | None], dict[str, Any]]  # (seed, report, save_weights) -> result


def measure(train: Train, seeds: Sequence[int], objectives: Sequence[str],
            report: Callable[[dict[str, float]], None] | None = None, save_weights: SaveWeights | None = None) -> dict[str, Any]:
    """Run `train` once per seed in `seeds` (each a result dict without history, a crash among them: `train`
    returns a trial's own failure as its status) and return the trial's result."""
    results = [train(seed, report if i == 0 else None, save_weights if i == 0 else None) for i, seed in enumerate(seeds)]
    return results[0] if len(results) == 1 else over_seeds(results, seeds, objectives)


def over_seeds(results: Sequence[dict[str, Any]], seeds: Sequence[int], objectives: Sequence[str]) -> dict[str, Any]:
    """One result from each seed's (in `seeds` order): the means over the ok seeds, `<objective>_std` and
    `<objective>_n` for each objective, and the failed seeds named in the reason."""
    failed = "; ".join(f"seed {s} {r['status']}" + (f": {r['reason']}" if r.get("reason") else "")
                       for s, r in zip(seeds, results, strict=True) if r["status"] != "ok")
    ok = [r for r in results if r["status"] == "ok"]
    if not ok:
        return {**results[0], "reason": failed[:500]}
    out = dict(ok[0])
    for name in METRICS:
        values = [r.get(name) for r in ok]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values if v is not None):
            continue  # text (a timing note): the first ok seed's
        spread = seed_spread(values)
        if spread.n:
            value = spread.mean * spread.n if name in SUMMED else spread.mean
            out[name] = round(value) if all(isinstance(v, int) for v in values if v is not None) else value  # counts stay whole
    for name, spread in seed_spreads(ok, objectives).items():
        out[f"{name}_std"], out[f"{name}_n"] = spread.std, spread.n
    out["reason"] = failed[:500]
    return out
