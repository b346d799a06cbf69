"""The Pareto front of a run: its candidate trials, which of them are on the front, hypervolume, knee, and plots.

The maths lives in `archsearch.pareto`; the run directory is read through `archsearch.study.load_run`; what
`archsearch front` prints is in `archsearch.cli.front`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import ArchsearchError
from .metrics import DIRECTIONS, METRICS, OBJECTIVES
from .pareto import REFERENCE_MARGIN, default_reference, hypervolume, knee, pareto_mask
from .study import Objective, Run

if TYPE_CHECKING:
    import pandas as pd

class FrontError(ArchsearchError):
    """A run directory, an objective or a plot request that `front` (or `export --pick`) cannot use."""


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

    @property
    def spreads(self) -> dict[str, str]:
        """metric -> its column of standard deviations over seeds, for the objectives a run measured with
        search.repeats > 1 (none otherwise)."""
        c = self.candidates
        return {m: f"{m}_std" for m in self.metrics if f"{m}_std" in c.columns and bool(c[f"{m}_std"].notna().any())}

    def table(self) -> pd.DataFrame:
        """The front: trial, summary, objectives (and the baseline's name, where the study has baselines; the rung,
        where it has a fidelity ladder; each objective's standard deviation over seeds, `<metric>_std`, where the
        run repeated seeds), best first on the first objective."""
        extra = (["baseline"] if self.has_baselines else []) + (["rung"] if self.run.study.fidelity else [])
        front = self.candidates[self.mask][["trial", "summary", *self.metrics, *extra, *self.spreads.values()]]
        if "rung" in extra:
            front = front.astype({"rung": int})  # read as floats where a failed trial has none
        first = self.objectives[0]
        return front.sort_values([first.metric, "trial"], ascending=[first.direction == "minimize", True]).reset_index(drop=True)

    @property
    def has_baselines(self) -> bool:
        c = self.candidates
        return "baseline" in c.columns and bool(_marked(c["baseline"]).any())

    def row(self, trial: int) -> pd.Series:
        return self.candidates[self.candidates["trial"] == trial].iloc[0]

    def baselines(self) -> list[tuple[str, int, list[int]]]:
        """Each ok baseline trial (study `baselines:`): its name, trial number, and the front trials dominating it
        (empty: the baseline is on the front)."""
        if not self.has_baselines:
            return []
        sign = np.array([1.0 if o.direction == "minimize" else -1.0 for o in self.objectives])
        values = self.candidates[self.metrics].to_numpy(float) * sign
        front = np.flatnonzero(self.mask)
        out = []
        for i in np.flatnonzero(_marked(self.candidates["baseline"])):
            better = [int(self.candidates["trial"].iloc[j]) for j in front
                      if np.all(values[j] <= values[i]) and np.any(values[j] < values[i])]
            out.append((str(self.candidates["baseline"].iloc[i]), int(self.candidates["trial"].iloc[i]), better))
        return out


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
        if metric not in OBJECTIVES:
            raise FrontError(f"{flag}: unknown metric {metric!r}; expected one of {', '.join(OBJECTIVES)}")
        if direction and direction not in DIRECTIONS:
            raise FrontError(f"{flag}: {name!r}: expected {metric}:min or {metric}:max")
        if metric in (o.metric for o in out):
            raise FrontError(f"{flag}: {metric} is named twice")
        out.append(Objective(metric, DIRECTIONS[direction] if direction else study.get(metric, METRICS[metric].direction)))
    if not out:
        raise FrontError(f"{flag}: expected metric names separated by commas, e.g. bits_per_byte,train_tokens_per_s")
    return tuple(out)


def candidates(run: Run, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The ok trials that have a value for every objective (with a fidelity ladder: those of its top rung, since
    values at a smaller budget are not comparable)."""
    trials = run.trials
    metrics = [o.metric for o in objectives]
    table = run.trials_file
    for metric in metrics:
        if metric not in trials.columns:
            raise FrontError(f"{table}: no column {metric!r}; expected one of {', '.join(c for c in OBJECTIVES if c in trials.columns)}")
    ok = trials[trials["status"] == "ok"]
    if run.study.fidelity:
        ok = ok[ok["rung"] == run.study.fidelity.top]
    if ok.empty:
        counts = ", ".join(f"{n} {s}" for s, n in trials["status"].value_counts().items()) or "no trials"
        raise FrontError(f"{table}: no ok trial ({counts}); expected at least one trial with status ok")
    ok = ok.assign(**{m: ok[m].astype(float) for m in metrics})
    usable = ok.dropna(subset=metrics)
    if usable.empty:
        missing = [m for m in metrics if ok[m].isna().all()]
        raise FrontError(f"{table}: no ok trial has a value for {', '.join(missing or metrics)}; expected objectives this run measured")
    return usable.reset_index(drop=True)


def rung_counts(run: Run) -> list[tuple[int, int, int]]:
    """With a fidelity ladder: each rung's index, budget in tokens, and how many ok trials stopped there (the top
    rung's: how many trained the whole budget); empty without a ladder."""
    ladder = run.study.fidelity
    if ladder is None:
        return []
    ok = run.trials[run.trials["status"] == "ok"]
    return [(r, tokens, int((ok["rung"] == r).sum())) for r, tokens in enumerate(ladder.rungs)]


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


def _baseline_rows(front: Front) -> pd.DataFrame:
    """The candidates that are study baselines (none when the run has no baseline column)."""
    c = front.candidates
    return c[_marked(c["baseline"])] if "baseline" in c.columns else c.iloc[:0]


def _marked(column: pd.Series) -> pd.Series:
    """Which rows a text column marks: not missing and not empty (a column of only NaN reads as floats)."""
    return column.notna() & (column.astype(str).str.len() > 0)


def _spread(front: Front, metric: str) -> np.ndarray | None:
    """Each candidate's standard deviation of `metric` over its seeds (None: not repeated)."""
    column = front.spreads.get(metric)
    return None if column is None else front.candidates[column].astype(float).fillna(0.0).to_numpy()


def _plotly_error(front: Front, metric: str, colour: str) -> dict:
    spread = _spread(front, metric)
    return {"visible": False} if spread is None else {"type": "data", "array": spread.tolist(), "color": colour, "thickness": 1, "width": 2}


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
            if front.spreads:  # one standard deviation over the seeds, each way
                c = front.candidates
                ax.errorbar(c[x], c[y], xerr=_spread(front, x), yerr=_spread(front, y), fmt="none", ecolor=colour,
                            alpha=0.5, elinewidth=1, capsize=2, zorder=1)
            table, stairs = _staircase(front, i, j)
            ax.scatter(table[x], table[y], s=48, color=colour, edgecolor="black", zorder=3, label=f"{label}: front")
            if stairs:
                ax.step(table[x], table[y], where="post", color=colour, lw=1.5, zorder=2)
            for xv, yv, text in _labels(table, x, y, front.knee):
                ax.annotate(text, (xv, yv), fontsize=7, xytext=(4, 4), textcoords="offset points")
            marked = _baseline_rows(front)
            if len(marked):
                ax.scatter(marked[x], marked[y], s=140, marker="*", color=colour, edgecolor="black", zorder=4, label=f"{label}: baselines")
                for xv, yv, name in zip(marked[x], marked[y], marked["baseline"], strict=True):
                    ax.annotate(f"baseline {name}", (xv, yv), fontsize=7, xytext=(4, -10), textcoords="offset points")
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
            if front.spreads:  # one standard deviation over the seeds, each way
                c = front.candidates
                fig.add_trace(go.Scatter(
                    x=c[x], y=c[y], mode="markers", marker={"color": colour, "opacity": 0}, legendgroup=label,
                    showlegend=False, hoverinfo="skip", error_x=_plotly_error(front, x, colour),
                    error_y=_plotly_error(front, y, colour)), row=1, col=col)
            table, stairs = _staircase(front, i, j)
            if stairs:
                fig.add_trace(go.Scatter(x=table[x], y=table[y], mode="lines", line={"shape": "hv", "color": colour},
                                         legendgroup=label, showlegend=False, hoverinfo="skip"), row=1, col=col)
            marked = _baseline_rows(front)
            if len(marked):
                fig.add_trace(go.Scatter(x=marked[x], y=marked[y], mode="markers", name=f"{label}: baselines", legendgroup=label,
                                         showlegend=col == 1, marker={"color": colour, "size": 15, "symbol": "star"},
                                         text=[f"baseline {n}" for n in marked["baseline"]], hoverinfo="text+x+y"), row=1, col=col)
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
