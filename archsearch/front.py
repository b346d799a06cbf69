"""The Pareto front of a run: which trials no other trial beats, their hypervolume, the knee, tables and plots.

Every function works in the objectives' own units and directions: values are turned into "lower is better" inside
(`_as_minimised`) and never outside, so tables and plots show what the trials measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .architecture import human_metric
from .errors import ArchsearchError
from .study import DIRECTIONS, METRICS, Objective, Run, load_run

if TYPE_CHECKING:
    import pandas as pd

REFERENCE_MARGIN = 0.1  # the default reference point lies this share of each objective's range beyond its worst value


class FrontError(ArchsearchError):
    """A run directory, an objective or a plot request that `front` (or `export --pick`) cannot use."""


# --- the maths: arrays in, arrays out ----------------------------------------------------------------------------------


def _as_minimised(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    signs = np.array([1.0 if DIRECTIONS[d] == "minimize" else -1.0 for d in directions])
    return np.asarray(values, dtype=float).reshape(-1, len(signs)) * signs


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Which rows of `values` [n, m] no other row dominates (at least as good everywhere, better somewhere).

    Equal rows do not dominate each other, so duplicates of a front point are all on the front.
    """
    v = _as_minimised(values, directions)
    at_least_as_good = (v[:, None, :] <= v[None, :, :]).all(-1)  # [j, i]: row j is no worse than row i anywhere
    better = (v[:, None, :] < v[None, :, :]).any(-1)
    return ~(at_least_as_good & better).any(0)


def hypervolume(points: np.ndarray, reference: Sequence[float], directions: Sequence[str]) -> float:
    """The volume that `points` [n, m] dominate, bounded by `reference` (exact).

    Points that do not beat the reference in every objective add nothing. Two objectives: one sweep; more: slices
    along the last objective, each an exact hypervolume of one dimension fewer (fine for fronts of tens of points).
    """
    p = _as_minimised(points, directions)
    r = _as_minimised(np.asarray(reference, dtype=float), directions)[0]
    p = p[(p < r).all(1)]
    if len(p) == 0:
        return 0.0
    p = np.unique(p[pareto_mask(p, ["minimize"] * p.shape[1])], axis=0)
    return float(_hv_minimised(p, r))


def _hv_minimised(p: np.ndarray, r: np.ndarray) -> float:
    m = p.shape[1]
    if m == 1:
        return float(r[0] - p[:, 0].min())
    if m == 2:
        p = p[np.argsort(p[:, 0], kind="stable")]
        volume, ceiling = 0.0, r[1]
        for x, y in p:  # sorted by x, a non-dominated set has y falling: each point adds its strip
            if y < ceiling:
                volume += (r[0] - x) * (ceiling - y)
                ceiling = y
        return volume
    order = np.argsort(p[:, -1], kind="stable")
    p = p[order]
    cuts = np.append(p[:, -1], r[-1])
    volume = 0.0
    for i in range(len(p)):
        depth = cuts[i + 1] - cuts[i]
        if depth > 0:
            below = p[: i + 1, :-1]
            below = below[pareto_mask(below, ["minimize"] * (m - 1))]
            volume += depth * _hv_minimised(below, r[:-1])
    return volume


def default_reference(values: np.ndarray, directions: Sequence[str], margin: float = REFERENCE_MARGIN) -> np.ndarray:
    """Each objective's worst value over `values` [n, m], pushed `margin` of its range further out (of |worst|, or
    1, where every value is equal), so that the worst points still add volume."""
    v = _as_minimised(values, directions)
    worst, best = v.max(0), v.min(0)
    span = np.where(worst > best, worst - best, np.where(worst != 0, np.abs(worst), 1.0))
    return (worst + margin * span) * _as_minimised(np.ones(len(directions)), directions)[0]


def knee(values: np.ndarray, directions: Sequence[str]) -> int:
    """The row of a front [n, m] closest to the utopia point once each objective is scaled to [0, 1] over the front
    (0 its best value, 1 its worst; an objective on which the front agrees counts 0). Returns a row index."""
    v = _as_minimised(values, directions)
    low, high = v.min(0), v.max(0)
    scaled = np.where(high > low, (v - low) / np.where(high > low, high - low, 1.0), 0.0)
    return int(np.argmin(np.sqrt((scaled**2).sum(1))))


# --- a run's front ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Front:
    """The front of one run for some objectives: the candidates, which of them are on the front, its volume."""

    run: Run
    objectives: tuple[Objective, ...]
    candidates: pd.DataFrame  # the ok trials with a value for every objective
    mask: np.ndarray  # candidates on the front
    reference: tuple[float, ...]
    reference_source: str  # how the reference was chosen, in words
    hypervolume: float
    knee: int  # the knee's trial number

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    def table(self) -> pd.DataFrame:
        """The front: trial, summary and objectives, best first on the first objective."""
        front = self.candidates[self.mask][["trial", "summary", *self.metrics]]
        first = self.objectives[0]
        return front.sort_values([first.metric, "trial"], ascending=[first.direction == "minimize", True]).reset_index(drop=True)

    def row(self, trial: int) -> pd.Series:
        return self.candidates[self.candidates["trial"] == trial].iloc[0]


def load(path: str | Path) -> Run:
    """A run directory with a trials table, or a FrontError naming what is missing."""
    p = Path(path)
    if not p.is_dir():
        raise FrontError(f"{p}: no such run directory; expected the --out folder of archsearch run")
    if not (p / "trials.csv").exists():
        raise FrontError(f"{p / 'trials.csv'}: missing; expected the trials table archsearch run writes (has the run finished a trial?)")
    return load_run(p)


def objectives(run: Run, chosen: str | Sequence[str] | None = None, flag: str = "--objectives") -> tuple[Objective, ...]:
    """The study's objectives, or those named in `chosen` ("A,B" or a list; "A:max" overrides a direction).

    A metric the study optimises keeps the study's direction; any other takes its natural one. Errors name `flag`.
    """
    if chosen is None:
        return tuple(run.study.objectives)
    names = [c.strip() for c in chosen.split(",")] if isinstance(chosen, str) else list(chosen)
    study = {o.metric: o.direction for o in run.study.objectives}
    out: list[Objective] = []
    for name in names:
        metric, _, direction = name.partition(":")
        if metric not in METRICS:
            raise FrontError(f"{flag}: unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
        if direction and direction not in DIRECTIONS:
            raise FrontError(f"{flag}: {name!r}: expected {metric}:min or {metric}:max")
        if metric in (o.metric for o in out):
            raise FrontError(f"{flag}: {metric} is named twice")
        out.append(Objective(metric, DIRECTIONS[direction] if direction else study.get(metric, METRICS[metric])))
    if not out:
        raise FrontError(f"{flag}: expected metric names separated by commas, e.g. bits_per_byte,train_tokens_per_s")
    return tuple(out)


def candidates(run: Run, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The ok trials that have a value for every objective."""
    trials = run.trials
    metrics = [o.metric for o in objectives]
    table = run.path / "trials.csv"
    for metric in metrics:
        if metric not in trials.columns:
            raise FrontError(f"{table}: no column {metric!r}; expected one of {', '.join(c for c in METRICS if c in trials.columns)}")
    ok = trials[trials["status"] == "ok"]
    if ok.empty:
        counts = ", ".join(f"{n} {s}" for s, n in trials["status"].value_counts().items()) or "no trials"
        raise FrontError(f"{table}: no ok trial ({counts}); expected at least one trial with status ok")
    ok = ok.assign(**{m: ok[m].astype(float) for m in metrics})
    usable = ok.dropna(subset=metrics)
    if usable.empty:
        missing = [m for m in metrics if ok[m].isna().all()]
        raise FrontError(f"{table}: no ok trial has a value for {', '.join(missing or metrics)}; expected objectives this run measured")
    return usable.reset_index(drop=True)


DEFAULT_REFERENCE = f"each objective's worst over the ok trials, pushed {REFERENCE_MARGIN:.0%} of its range further out"


def compute_front(run: Run, objectives: Sequence[Objective] | None = None, reference: Sequence[float] | None = None,
                  reference_source: str = "given") -> Front:
    """The front of `run` for `objectives` (default: the study's), its hypervolume at `reference` (default: each
    objective's worst over the ok trials, pushed 10% of its range further out) and its knee. `reference_source`
    says in words where a given reference came from."""
    objectives = tuple(objectives or run.study.objectives)
    directions = [o.direction for o in objectives]
    cands = candidates(run, objectives)
    values = cands[[o.metric for o in objectives]].to_numpy(float)
    if reference is None:
        reference, reference_source = default_reference(values, directions), DEFAULT_REFERENCE
    elif len(reference) != len(objectives):
        raise FrontError(f"--reference: expected {len(objectives)} numbers (one per objective: {', '.join(o.metric for o in objectives)}), got {len(reference)}")
    mask = pareto_mask(values, directions)
    front_rows = np.flatnonzero(mask)
    knee_trial = int(cands["trial"].iloc[front_rows[knee(values[mask], directions)]])
    volume = hypervolume(values[mask], reference, directions)
    return Front(run, objectives, cands, mask, tuple(float(x) for x in reference), reference_source, volume, knee_trial)


def front_table(run: Run, objectives: Sequence[Objective] | None = None) -> pd.DataFrame:
    """The front of `run` as a table: trial, summary and objectives, best first on the first objective."""
    return compute_front(run, objectives).table()


def shared_reference(runs: Sequence[Run], objectives: Sequence[Objective]) -> np.ndarray:
    """A reference point fair to every run: the default reference over all their ok trials together."""
    values = np.concatenate([candidates(r, objectives)[[o.metric for o in objectives]].to_numpy(float) for r in runs])
    return default_reference(values, [o.direction for o in objectives])


def best_trial(run: Run, metric: str) -> int:
    """The ok trial with the best value of `metric` (the study's direction, else the metric's natural one)."""
    (objective,) = objectives(run, [metric], flag=f"--pick best:{metric}")
    cands = candidates(run, [objective])
    column = cands[metric]
    return int(cands["trial"].loc[column.idxmin() if objective.direction == "minimize" else column.idxmax()])


# --- plots -----------------------------------------------------------------------------------------------------------

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def axis_title(objective: Objective) -> str:
    better = "lower" if objective.direction == "minimize" else "higher"
    return f"{objective.metric} ({better} is better)"


def plot_front(fronts: Front | Sequence[Front], path: str | Path, labels: Sequence[str] | None = None) -> Path:
    """Plot every candidate trial of each front's run, the fronts highlighted, connected and labelled with the
    architectures' summaries. PNG (matplotlib) or HTML (plotly) by the suffix of `path`. Two objectives make one
    panel; more make one panel per pair."""
    fronts = [fronts] if isinstance(fronts, Front) else list(fronts)
    path = Path(path)
    labels = list(labels) if labels else [f.run.path.name or str(f.run.path) for f in fronts]
    if path.suffix.lower() == ".png":
        _plot_matplotlib(fronts, labels, path)
    elif path.suffix.lower() in (".html", ".htm"):
        _plot_plotly(fronts, labels, path)
    else:
        raise FrontError(f"--plot: {path}: expected a file ending in .png or .html")
    return path


def _pairs(m: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(m) for j in range(i + 1, m)]


def _staircase(front: Front, i: int, j: int) -> tuple[pd.DataFrame, bool]:
    """The front's points on axes (i, j), ordered for drawing; whether a staircase is meaningful (two objectives)."""
    x = front.objectives[i]
    table = front.table().sort_values(x.metric, ascending=x.direction == "minimize")
    return table, len(front.objectives) == 2


def _labels(table: pd.DataFrame, x: str, y: str, knee_trial: int) -> list[tuple[float, float, str]]:
    """One label per distinct point: trials that landed on the same values share it, a line per architecture
    (trials of one architecture, a reused result, share the line)."""
    points: dict[tuple[float, float], dict[str, list[int]]] = {}
    for trial, summary, xv, yv in zip(table["trial"], table["summary"], table[x], table[y], strict=True):
        points.setdefault((xv, yv), {}).setdefault(summary, []).append(int(trial))
    labels = []
    for (xv, yv), archs in points.items():
        lines = [", ".join(f"#{t}" for t in trials) + f" {summary}" + (" (knee)" if knee_trial in trials else "")
                 for summary, trials in archs.items()]
        labels.append((xv, yv, "\n".join(lines)))
    return labels


def _title(fronts: Sequence[Front], labels: Sequence[str]) -> str:
    parts = []
    for f, label in zip(fronts, labels, strict=True):
        parts.append(f"{label}: {int(f.mask.sum())} on the front of {len(f.candidates)}, hypervolume {f.hypervolume:.4g}")
    return "; ".join(parts)


def _plot_matplotlib(fronts: Sequence[Front], labels: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = fronts[0].objectives
    pairs = _pairs(len(objectives))
    fig, axes = plt.subplots(1, len(pairs), figsize=(8 * len(pairs), 6), squeeze=False)
    for ax, (i, j) in zip(axes[0], pairs, strict=True):
        x, y = objectives[i].metric, objectives[j].metric
        for k, (front, label) in enumerate(zip(fronts, labels, strict=True)):
            colour = _COLOURS[k % len(_COLOURS)]
            others = front.candidates[~front.mask]
            ax.scatter(others[x], others[y], s=18, color=colour, alpha=0.3, label=f"{label}: trials")
            table, stairs = _staircase(front, i, j)
            ax.scatter(table[x], table[y], s=48, color=colour, edgecolor="black", zorder=3, label=f"{label}: front")
            if stairs:
                ax.step(table[x], table[y], where="post", color=colour, lw=1.5, zorder=2)
            for xv, yv, text in _labels(table, x, y, front.knee):
                ax.annotate(text, (xv, yv), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel(axis_title(objectives[i]))
        ax.set_ylabel(axis_title(objectives[j]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_title(fronts, labels), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_plotly(fronts: Sequence[Front], labels: Sequence[str], path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    objectives = fronts[0].objectives
    pairs = _pairs(len(objectives))
    fig = make_subplots(rows=1, cols=len(pairs))
    for col, (i, j) in enumerate(pairs, start=1):
        x, y = objectives[i].metric, objectives[j].metric
        for k, (front, label) in enumerate(zip(fronts, labels, strict=True)):
            colour = _COLOURS[k % len(_COLOURS)]
            others = front.candidates[~front.mask]
            fig.add_trace(go.Scatter(
                x=others[x], y=others[y], mode="markers", name=f"{label}: trials", legendgroup=label,
                showlegend=col == 1, marker={"color": colour, "opacity": 0.35, "size": 7},
                text=[f"#{t} {s}" for t, s in zip(others["trial"], others["summary"], strict=True)], hoverinfo="text+x+y",
            ), row=1, col=col)
            table, stairs = _staircase(front, i, j)
            if stairs:
                fig.add_trace(go.Scatter(x=table[x], y=table[y], mode="lines", line={"shape": "hv", "color": colour},
                                         legendgroup=label, showlegend=False, hoverinfo="skip"), row=1, col=col)
            points = _labels(table, x, y, front.knee)
            fig.add_trace(go.Scatter(
                x=[p[0] for p in points], y=[p[1] for p in points], mode="markers+text", name=f"{label}: front",
                legendgroup=label, showlegend=col == 1,
                marker={"color": colour, "size": 11, "line": {"width": 1, "color": "black"}},
                text=[p[2].replace("\n", "<br>") for p in points], textposition="top right", textfont={"size": 9},
                hoverinfo="text+x+y",
            ), row=1, col=col)
        fig.update_xaxes(title_text=axis_title(objectives[i]), row=1, col=col)
        fig.update_yaxes(title_text=axis_title(objectives[j]), row=1, col=col)
    fig.update_layout(title={"text": _title(fronts, labels), "font": {"size": 12}}, width=900 * len(pairs), height=650)
    fig.write_html(path, include_plotlyjs=True)


# --- what `archsearch front` prints ------------------------------------------------------------------------------------


def describe(front: Front) -> list[str]:
    """The lines `archsearch front` prints for one run."""
    import pandas as pd

    run, trials = front.run, front.run.trials
    statuses = trials["status"].value_counts()
    others = ", ".join(f"{n} {s}" for s, n in statuses.items() if s != "ok")
    lines = [f"run {run.path}: {len(trials)} trials, {statuses.get('ok', 0)} ok" + (f" ({others})" if others else "")]
    lines.append("objectives: " + ", ".join(f"{o.metric} ({o.direction[:3]})" for o in front.objectives))
    if len(front.candidates) < statuses.get("ok", 0):
        lines.append(f"  ({statuses.get('ok', 0) - len(front.candidates)} ok trials lack a value for an objective and are left out)")
    table = front.table()
    shown = table.assign(**{o.metric: _right(table[o.metric].map(lambda v, m=o.metric: format_metric(m, v)), o.metric) for o in front.objectives})
    shown["trial"] = _right(shown["trial"].astype(str), "trial")
    width = shown["summary"].str.len().max()
    shown["summary"] = shown["summary"].str.ljust(width)  # architectures read left to right
    shown = shown.rename(columns={"summary": "architecture"})
    shown.insert(0, "", ["knee" if t == front.knee else "" for t in table["trial"]])
    lines.append(f"\nPareto front: {len(table)} of {len(front.candidates)} trials")
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
        lines += ["  " + line.rstrip() for line in shown.to_string(index=False, justify="left").splitlines()]
    lines.append(f"\nhypervolume: {front.hypervolume:.6g} at reference point ({_point(front.objectives, front.reference)}; {front.reference_source})")
    k = front.row(front.knee)
    lines.append(f"knee: trial {front.knee} {k['summary']} ("
                 + ", ".join(f"{o.metric}={format_metric(o.metric, k[o.metric])}" for o in front.objectives)
                 + "; closest to the utopia point with each objective scaled to [0, 1] over the front)")
    return lines


def format_metric(metric: str, value: Any) -> str:
    """A metric for reading: counts and bytes at a glance (21.3M, 1.5MiB), rates in whole tokens, the rest to 4 digits."""
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if metric.endswith(("params", "bytes", "flops_per_token")):
        return human_metric(metric, v)
    if metric.endswith("tokens_per_s"):
        return f"{v:,.0f}"
    return f"{v:.4g}"


def _right(column: pd.Series, header: str) -> pd.Series:
    """Right-align a column of strings under its header (the table is printed left-justified)."""
    return column.str.rjust(max(len(header), column.str.len().max()))


def _point(objectives: Sequence[Objective], values: Sequence[float]) -> str:
    """A point exactly enough to pass back with --reference."""
    return ", ".join(f"{o.metric}={v:.6g}" for o, v in zip(objectives, values, strict=True))


def parse_reference(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise FrontError(f"--reference: {text!r}: expected numbers separated by commas, one per objective") from None


def run_cli(path: str, chosen: str | None = None, plot: str | None = None, compare: str | None = None,
            reference: str | None = None) -> int:
    """`archsearch front`: print the front of a run (and of a second one with --compare), plot it when asked."""
    if plot is not None and Path(plot).suffix.lower() not in (".png", ".html", ".htm"):
        raise FrontError(f"--plot: {plot}: expected a file ending in .png or .html")
    run = load(path)
    objs = objectives(run, chosen)
    ref = parse_reference(reference) if reference is not None else None
    runs = [run]
    source = "given with --reference"
    if compare is not None:
        runs.append(load(compare))
        if ref is None:
            ref, source = list(shared_reference(runs, objs)), "shared by the compared runs: " + DEFAULT_REFERENCE.replace("the ok", "both runs' ok")
    fronts = [compute_front(r, objs, ref, source) for r in runs]
    for i, front in enumerate(fronts):
        if i:
            print()
        print("\n".join(describe(front)))
    if len(fronts) > 1:
        print(f"\nhypervolume at the shared reference point ({_point(objs, fronts[0].reference)}):")
        for front in fronts:
            print(f"  {front.run.path}: {front.hypervolume:.6g}")
    if plot is not None:
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        print(f"\nplot: {plot_front(fronts, plot, [str(r.path) for r in runs])}")
    return 0
