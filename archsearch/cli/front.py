"""`archsearch front`: the Pareto front of a run as a table, its hypervolume and knee, and a plot."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..front import (
    DEFAULT_REFERENCE,
    Front,
    FrontError,
    compute_front,
    objectives,
    plot_front,
    rung_counts,
    shared_reference,
)
from ..metrics import format_metric, human
from ..study import Objective, RunDir, load_run
from ..validate import front_line


def add_parser(sub) -> None:
    f = sub.add_parser("front", help="the Pareto front of a run: table, hypervolume, knee, PNG/HTML plot")
    f.add_argument("run", help="run directory (the --out of archsearch run)")
    f.add_argument("--objectives", metavar="A,B", help="metrics to trade off (default: the study's); METRIC:min|max overrides a direction")
    f.add_argument("--trust-plugins", action="store_true", help="import the plugins the run's study lists (runs their code; needed when its space uses a plugin's blocks)")
    f.add_argument("--plot", metavar="FILE", help="write a plot: FILE.png (matplotlib) or FILE.html (plotly)")
    f.add_argument("--compare", metavar="RUN2", help="overlay a second run; hypervolumes at a shared reference point")
    f.add_argument("--reference", metavar="X,Y", help="hypervolume reference point, one number per objective (default: the worst values pushed 10%% of their range out); negative numbers as --reference=-1,5")


def describe(front: Front) -> list[str]:
    """The lines `archsearch front` prints for one run."""
    run, trials = front.run, front.run.trials
    statuses = trials["status"].value_counts()
    others = ", ".join(f"{n} {s}" for s, n in statuses.items() if s != "ok")
    lines = [f"run {run.path}: {len(trials)} trials, {statuses.get('ok', 0)} ok" + (f" ({others})" if others else "")]
    lines.append("objectives: " + ", ".join(f"{o.metric} ({o.direction[:3]})" for o in front.objectives))
    eligible = statuses.get("ok", 0)
    counts = rung_counts(run)
    if counts:
        *stopped, (top, tokens, eligible) = counts
        lines.append(f"fidelity ladder (keep {run.study.fidelity.keep:g}): " + ", ".join(f"{n} ok trials stopped at rung {r} ({human(t)} tokens)" for r, t, n in stopped)
                     + f"; {eligible} reached the top rung {top} ({human(tokens)} tokens): the front is made of those")
    if len(front.candidates) < eligible:
        lines.append(f"  ({eligible - len(front.candidates)} ok trials lack a value for an objective and are left out)")
    table = front.table()
    shown = table.assign(**{o.metric: _right(_values(table, o.metric, front.spreads.get(o.metric)), o.metric) for o in front.objectives})
    shown = shown.drop(columns=list(front.spreads.values()))
    shown["trial"] = _right(shown["trial"].astype(str), "trial")
    width = shown["summary"].str.len().max()
    shown["summary"] = shown["summary"].str.ljust(width)  # architectures read left to right
    shown = shown.rename(columns={"summary": "architecture"})
    if "baseline" in shown.columns:
        shown["baseline"] = shown["baseline"].astype(object).where(shown["baseline"].notna(), "").astype(str)
    shown.insert(0, "", ["knee" if t == front.knee else "" for t in table["trial"]])
    lines.append(f"\nPareto front: {len(table)} of {len(front.candidates)} trials")
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
        lines += ["  " + line.rstrip() for line in shown.to_string(index=False, justify="left").splitlines()]
    for name, trial, better in front.baselines():
        lines.append(f"baseline {name} (trial {trial}): " + (f"dominated by the front's trials {', '.join(map(str, better))}"
                                                              if better else "on the front (not dominated)"))
    lines.append(f"\nhypervolume: {front.hypervolume:.6g} at reference point ({_point(front.objectives, front.reference)}; {front.reference_source})")
    k = front.row(front.knee)
    lines.append(f"knee: trial {front.knee} {k['summary']} ("
                 + ", ".join(f"{o.metric}={format_metric(o.metric, k[o.metric])}" for o in front.objectives)
                 + "; closest to the utopia point with each objective scaled to [0, 1] over the front)")
    lines.append(front_line(RunDir(run.path).read_validation(), run.study))
    return lines


def _values(table: pd.DataFrame, metric: str, spread: str | None) -> pd.Series:
    """A metric's column as printed: the value, or the mean ± the standard deviation over seeds."""
    values = table[metric].map(lambda v: format_metric(metric, v))
    if spread is None:
        return values
    return values + table[spread].map(lambda s: "" if s != s else " ± " + format_metric(metric, s))


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


def run(args: argparse.Namespace) -> int:
    return show(args.run, chosen=args.objectives, plot=args.plot, compare=args.compare, reference=args.reference,
                trust_plugins=args.trust_plugins)


def show(path: str, chosen: str | None = None, plot: str | None = None, compare: str | None = None,
         reference: str | None = None, trust_plugins: bool = False) -> int:
    """Print the front of a run (and of a second one with --compare), plot it when asked."""
    if plot is not None and Path(plot).suffix.lower() not in (".png", ".html", ".htm"):
        raise FrontError(f"--plot: {plot}: expected a file ending in .png or .html")
    run = load_run(path, require_trials=True, trust_plugins=trust_plugins)
    objs = objectives(run, chosen)
    ref = parse_reference(reference) if reference is not None else None
    runs = [run]
    source = "given with --reference"
    if compare is not None:
        runs.append(load_run(compare, require_trials=True, trust_plugins=trust_plugins))
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
