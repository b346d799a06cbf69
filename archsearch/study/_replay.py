"""The search itself, measured on a tabular benchmark: every architecture of a small finite space trained once
(a CSV table), and each sampler replayed on it with Optuna's ask/tell, without Ray.

A replay asks for trials exactly as `archsearch run` does (the same define-by-run walk, the same constraint-aware
ask loop, the same sampler settings), looks each architecture's objectives up in the table instead of training
it, and records the hypervolume of what it has found after each trial, at a reference point fixed by the whole
table; the whole table's own front is the true front.

The table's file: `# key: value` header lines (device, date, command, settings), then a CSV with a row per
architecture: `digest`, `summary`, `arch` (normal-form JSON) and one column per metric.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from ..errors import ArchsearchError
from ..pareto import default_reference, hypervolume
from ._config import Study
from ._samplers import REDRAWN, SAMPLERS, SpaceExhausted, ask_feasible, draw

TABLE_KEYS = ("digest", "summary", "arch")  # the columns before the metrics


class TableError(ArchsearchError):
    """A tabular benchmark file that cannot be read, or that lacks an architecture a replay drew."""


@dataclass(frozen=True)
class Table:
    """A tabular benchmark: metrics by architecture digest, and the header that says how they were measured."""

    header: dict[str, str]
    rows: dict[str, dict[str, Any]]  # digest -> the row (summary, arch, metrics)

    @classmethod
    def read(cls, path: str | Path) -> Table:
        import pandas as pd

        path = Path(path)
        if not path.exists():
            raise TableError(f"{path}: no such table; expected a CSV written by benchmarks/tabular.py --build")
        header: dict[str, str] = {}
        with open(path) as f:
            for line in f:
                if not line.startswith("#"):
                    break
                key, _, value = line[1:].partition(":")
                header[key.strip()] = value.strip()
        frame = pd.read_csv(path, comment="#", dtype={"digest": str})
        missing = [k for k in TABLE_KEYS if k not in frame.columns]
        if missing:
            raise TableError(f"{path}: no column {missing[0]!r}; expected {', '.join(TABLE_KEYS)}, then metric columns")
        return cls(header, {str(r["digest"]): r for r in frame.to_dict("records")})

    def write(self, path: str | Path) -> None:
        import pandas as pd

        frame = pd.DataFrame(list(self.rows.values()))
        frame = frame.reindex(columns=[*TABLE_KEYS, *sorted(c for c in frame.columns if c not in TABLE_KEYS)])
        with open(path, "w") as f:
            for key, value in self.header.items():
                f.write(f"# {key}: {value}\n")
            frame.to_csv(f, index=False)

    def values(self, metrics: Sequence[str]) -> np.ndarray:
        """The measured points (rows whose run failed, with a missing value, left out)."""
        points = np.array([[float(r[m]) for m in metrics] for r in self.rows.values()])
        return points[np.isfinite(points).all(axis=1)]


@dataclass(frozen=True)
class Replay:
    """One sampler's replay for one seed: the hypervolume after each trial, and how many draws were infeasible."""

    sampler: str
    seed: int
    hypervolume: np.ndarray  # after trial 1, 2, ..., as a share of the true front's hypervolume
    digests: tuple[str, ...]  # the architecture of each trial
    redrawn: int  # infeasible draws that did not use up a trial

    def trials_to(self, share: float) -> int | None:
        """The first trial count at which the found front has `share` of the true front's hypervolume."""
        hit = np.flatnonzero(self.hypervolume >= share - 1e-12)
        return int(hit[0]) + 1 if hit.size else None


def replay(study: Study, table: Table, sampler: str, seed: int, trials: int,
           settings: Mapping[str, Any] | None = None) -> Replay:
    """Replay `sampler` (a name in SAMPLERS) for `trials` trials on `table`, as `archsearch run` would ask them: a
    re-drawn architecture is told its value and is not a trial; once every architecture is found the curve stays."""
    metrics = [o.metric for o in study.objectives]
    directions = [o.direction for o in study.objectives]
    all_values = table.values(metrics)
    reference = default_reference(all_values, directions)
    true_volume = hypervolume(all_values, reference, directions)
    s = study.search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ostudy = optuna.create_study(directions=directions, sampler=SAMPLERS[sampler].build(seed, trials, settings))
    found: list[list[float]] = []
    curve, digests = [], []
    told: dict[str, tuple[optuna.trial.TrialState, list[float] | None]] = {}  # what a re-draw is told, as in a run
    for _ in range(trials):
        try:
            trial, config = ask_feasible(ostudy, lambda t: draw(study, t), s.counts_infeasible, s.max_draws, told.get)
        except SpaceExhausted:
            break  # every architecture is found: the curve stays where it is
        if config["reason"]:
            ostudy.tell(trial, state=optuna.trial.TrialState.FAIL)
            told[config["digest"]] = (optuna.trial.TrialState.FAIL, None)
        else:
            row = table.rows.get(config["digest"])
            if row is None:
                summary = json.loads(config["arch"]) if config["arch"] else config["digest"]
                raise TableError(f"the table lacks an architecture the space draws ({summary}); rebuild it from this space")
            values = [float(row[m]) for m in metrics]
            if all(np.isfinite(values)):
                ostudy.tell(trial, values)
                found.append(values)
                told[config["digest"]] = (optuna.trial.TrialState.COMPLETE, values)
            else:  # the architecture's run failed (out of memory, diverged): a failed trial, as in a study
                ostudy.tell(trial, state=optuna.trial.TrialState.FAIL)
        digests.append(config["digest"])
        volume = hypervolume(np.array(found), reference, directions) if found else 0.0
        curve.append(volume / true_volume)
    curve += [curve[-1] if curve else 0.0] * (trials - len(curve))
    redrawn = sum(t.user_attrs.get("status") == REDRAWN for t in ostudy.get_trials(deepcopy=False))
    return Replay(sampler, seed, np.array(curve), tuple(digests), redrawn)


def replay_all(study: Study, table: Table, samplers: Mapping[str, tuple[str, Mapping[str, Any] | None]] | Sequence[str],
               seeds: Sequence[int], trials: int) -> dict[str, list[Replay]]:
    """Every sampler over every seed: `samplers` names them, or maps a label to (sampler, its settings), so one
    sampler can be compared with itself under other settings."""
    specs = samplers if isinstance(samplers, Mapping) else {name: (name, None) for name in samplers}
    return {label: [replay(study, table, name, seed, trials, settings) for seed in seeds]
            for label, (name, settings) in specs.items()}


def summarise(results: Mapping[str, Sequence[Replay]], share: float = 0.95) -> list[dict[str, Any]]:
    """Per sampler: the median trials to `share` of the true hypervolume (seeds that never reach it count as
    trials + 1, and are counted), its quartiles, and the mean final share."""
    out = []
    for name, runs in results.items():
        n = len(runs[0].hypervolume)
        reach = np.array([r.trials_to(share) or n + 1 for r in runs], float)
        out.append({"sampler": name, "median": float(np.median(reach)), "q25": float(np.quantile(reach, 0.25)),
                    "q75": float(np.quantile(reach, 0.75)), "missed": int(sum(r.trials_to(share) is None for r in runs)),
                    "seeds": len(runs), "final": float(np.mean([r.hypervolume[-1] for r in runs]))})
    return out


def plot_replays(results: Mapping[str, Sequence[Replay]], path: str | Path, title: str = "") -> Path:
    """Median share of the true front's hypervolume against trials, with the quartile band, per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in results.items():
        curves = np.stack([r.hypervolume for r in runs])
        x = np.arange(1, curves.shape[1] + 1)
        ax.plot(x, np.median(curves, axis=0), label=f"{name} (median of {len(runs)} seeds)")
        ax.fill_between(x, np.quantile(curves, 0.25, axis=0), np.quantile(curves, 0.75, axis=0), alpha=0.2)
    ax.axhline(0.95, color="grey", lw=0.8, ls="--", label="95% of the true front")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume / true front's hypervolume")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
