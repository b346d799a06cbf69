"""A study's report: one self-contained HTML page (plotly, its JavaScript inlined, so it opens offline) to share.

Sections: the front (hover shows each architecture, layer by layer), hypervolume against trials, every trial's
learning curve (the intermediate evaluations Ray Tune recorded for it), the parameters' importances (Optuna's
PED-ANOVA evaluator over the run's optuna.db, one bar chart per objective), a parallel-coordinates view of the
parameters, and the proxy's validation (Kendall's tau) when the run holds a validation.json. A section whose data
the run lacks says so instead of plotting.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import front
from .architecture import Architecture
from .errors import ArchsearchError
from .pareto import hypervolume, pareto_mask
from .study import Run, RunDir, RunDirError


class ReportError(ArchsearchError):
    """A run that cannot be reported, or a report file that cannot be written."""


@dataclass
class Section:
    """One part of the page: a title, a sentence saying what it shows (or why it is empty), and its figure."""

    title: str
    note: str
    figure: Any = None  # a plotly Figure, or None


# --- what the run recorded -------------------------------------------------------------------------------------------


def learning_curves(run: Run) -> dict[int, pd.DataFrame]:
    """Each trial's intermediate evaluations (tokens, val_loss) by trial number, as the run directory holds them."""
    return {n: pd.DataFrame(points) for n, points in RunDir(run.path).learning_curves().items()}


def optuna_study(run: Run):  # -> optuna.Study | None
    """The run's Optuna study (from optuna.db), or None when the run has no storage."""
    return RunDir(run.path).optuna_study(run.study.name)


# --- sections --------------------------------------------------------------------------------------------------------


def _architecture_text(arch_json: str) -> str:
    arch = Architecture.from_json(arch_json)
    layers = [f"{i}: {layer.mixer.label()} + {layer.channel.label() if layer.channel else 'none'}"
              for i, layer in enumerate(arch.layers)]
    return "<br>".join([f"d_model={arch.d_model}", *layers])


def front_section(f: front.Front) -> Section:
    import plotly.graph_objects as go

    x, y = f.objectives[0].metric, f.objectives[-1].metric
    fig = go.Figure()
    for name, rows, size in (("trials", f.candidates[~f.mask], 7), ("front", f.candidates[f.mask], 11)):
        hover = [f"trial {t}: {s}<br>{_architecture_text(a)}" for t, s, a in zip(rows["trial"], rows["summary"], rows["arch"], strict=True)]
        fig.add_trace(go.Scatter(x=rows[x], y=rows[y], mode="markers", name=name, text=hover, hoverinfo="text+x+y",
                                 marker={"size": size, "opacity": 1.0 if name == "front" else 0.4}))
    knee = f.row(f.knee)
    fig.add_annotation(x=knee[x], y=knee[y], text=f"knee: trial {f.knee}", showarrow=True)
    fig.update_layout(xaxis_title=front.axis_title(f.objectives[0]), yaxis_title=front.axis_title(f.objectives[-1]))
    shown = f"{x} against {y}" + (f" (of {len(f.objectives)} objectives)" if len(f.objectives) > 2 else "")
    return Section("Pareto front", f"{int(f.mask.sum())} of {len(f.candidates)} ok trials on the front, {shown}; "
                   "hover a point for its architecture.", fig)


def hypervolume_section(f: front.Front) -> Section:
    """The front's hypervolume after each trial, at the final front's reference point."""
    import plotly.graph_objects as go

    directions = [o.direction for o in f.objectives]
    ordered = f.candidates.sort_values("trial")
    values = ordered[f.metrics].to_numpy(float)
    volumes = [hypervolume(values[: i + 1][pareto_mask(values[: i + 1], directions)], f.reference, directions)
               for i in range(len(values))]
    fig = go.Figure(go.Scatter(x=ordered["trial"], y=volumes, mode="lines+markers", line={"shape": "hv"}))
    fig.update_layout(xaxis_title="trial", yaxis_title="hypervolume")
    return Section("Hypervolume against trials", f"of the front of {', '.join(f.metrics)} over the ok trials so far, at "
                   f"the reference {tuple(round(r, 4) for r in f.reference)} ({f.reference_source}).", fig)


def curves_section(run: Run) -> Section:
    import plotly.graph_objects as go

    curves = learning_curves(run)
    if not curves:
        return Section("Learning curves", "the run recorded no intermediate evaluations (no ray/*/*/result.json).")
    summaries = dict(zip(run.trials["trial"], run.trials["summary"], strict=True))
    fig = go.Figure()
    for number, curve in curves.items():
        fig.add_trace(go.Scatter(x=curve["tokens"], y=curve["val_loss"], mode="lines+markers",
                                 name=f"{number}: {summaries.get(number, '')}"))
    fig.update_layout(xaxis_title="tokens trained", yaxis_title="validation loss (nats per token)")
    single = sum(len(c) == 1 for c in curves.values())
    note = f"{len(curves)} trials' evaluations during training, as Ray Tune recorded them"
    if single:
        note += f"; {single} reported only once (stopped at the first evaluation, or a result an older run reused)"
    return Section("Learning curves", note + ".", fig)


def _targets(run: Run, lower_is_better: bool = False) -> list[tuple[str, Callable]]:
    """(metric, the trial's value) per objective; negated for maximised metrics with `lower_is_better`."""
    signs = [-1.0 if lower_is_better and o.direction == "maximize" else 1.0 for o in run.study.objectives]
    return [(o.metric, lambda t, i=i, s=s: s * t.values[i]) for i, (o, s) in enumerate(zip(run.study.objectives, signs, strict=True))]


def importance_section(run: Run, study) -> Section:
    import optuna
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if study is None:
        return Section("Parameter importances", "the run has no optuna.db.")
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    importances, problems = {}, []
    for name, target in _targets(run, lower_is_better=True):  # PED-ANOVA ranks what leads to low values
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # its reminder that it looks for low values
                importances[name] = optuna.importance.get_param_importances(
                    study, target=target, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
        except (ValueError, RuntimeError) as e:
            problems.append(f"{name}: {e}")
    if not importances:
        return Section("Parameter importances", f"not computable from {len(complete)} complete trials: " + "; ".join(problems))
    fig = make_subplots(rows=1, cols=len(importances), subplot_titles=list(importances))
    for col, values in enumerate(importances.values(), start=1):
        names = list(values)[::-1]
        fig.add_trace(go.Bar(x=[values[n] for n in names], y=names, orientation="h", showlegend=False), row=1, col=col)
    note = f"Optuna's PED-ANOVA evaluator over {len(complete)} complete trials, one chart per objective."
    return Section("Parameter importances", note + (" Not computable: " + "; ".join(problems) if problems else ""), fig)


def parallel_section(run: Run, study) -> Section:
    import optuna

    if study is None:
        return Section("Parameters", "the run has no optuna.db.")
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return Section("Parameters", f"{len(complete)} complete trial(s): nothing to compare.")
    name, target = _targets(run)[0]
    fig = optuna.visualization.plot_parallel_coordinate(study, target=target, target_name=name)
    return Section("Parameters", f"each complete trial's parameters (Optuna's parallel-coordinate plot), coloured by {name}.", fig)


def validation_section(run: Run) -> Section | None:
    import plotly.graph_objects as go

    try:
        report = RunDir(run.path).read_validation()
    except RunDirError as e:
        return Section("Proxy validation", str(e))
    if report is None:
        return None
    agreement = report.get("agreement") or {}
    tau = agreement.get("kendall_tau")
    if isinstance(tau, dict):
        tau = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in tau.items())
    note = (f"Kendall tau {tau} between the proxy's ranking on {report.get('metric')} and "
            f"{report.get('factor')}x its budget" if tau is not None else "fewer than 3 architectures finished both budgets")
    rows = [r for r in report.get("architectures", []) if r.get("proxy") is not None and r.get("long") is not None]
    if not rows:
        return Section("Proxy validation", note + ".")
    fig = go.Figure(go.Scatter(x=[r["proxy"] for r in rows], y=[r["long"] for r in rows], mode="markers",
                               text=[r.get("summary", "") for r in rows], hoverinfo="text+x+y"))
    fig.update_layout(xaxis_title=f"proxy {report.get('metric')}", yaxis_title=f"{report.get('factor')}x budget")
    return Section("Proxy validation", note + ".", fig)


# --- the page --------------------------------------------------------------------------------------------------------


def sections(run: Run) -> list[Section]:
    f = front.compute_front(run)
    study = optuna_study(run)
    out = [front_section(f), hypervolume_section(f), curves_section(run), importance_section(run, study),
           parallel_section(run, study)]
    validation = validation_section(run)
    return out + ([validation] if validation is not None else [])


def render(run: Run, parts: list[Section]) -> str:
    """The HTML page: plotly.js inlined once, then each section."""
    import plotly.io as pio

    body, script = [], True
    for part in parts:
        body.append(f"<h2>{html.escape(part.title)}</h2>\n<p>{html.escape(part.note)}</p>")
        if part.figure is not None:
            part.figure.update_layout(height=480, margin={"t": 40})
            body.append(pio.to_html(part.figure, include_plotlyjs=script, full_html=False, default_width="100%"))
            script = False
    trials = run.trials
    counts = ", ".join(f"{n} {s}" for s, n in trials["status"].value_counts().items())
    objectives = ", ".join(f"{o.metric} ({o.direction[:3]})" for o in run.study.objectives)
    head = (f"<h1>archsearch report: {html.escape(run.study.name)}</h1>\n<p>{html.escape(str(run.path))}: "
            f"{len(trials)} trials ({html.escape(counts)}); objectives {html.escape(objectives)}.</p>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>archsearch report: "
            f"{html.escape(run.study.name)}</title>\n<style>body {{font-family: sans-serif; margin: 2em;}} "
            "h2 {margin-top: 2em;}</style></head>\n<body>\n" + head + "\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(run: Run, out: str | Path) -> Path:
    """Write the report of `run` to `out` (an .html file)."""
    out = Path(out)
    if out.is_dir():
        raise ReportError(f"report: --out {out}: is a directory; expected a file name ending in .html")
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"report: --out {out}: expected a file name ending in .html")
    page = render(run, sections(run))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page)
    except OSError as e:
        raise ReportError(f"report: --out {out}: {e.strerror}") from None
    return out


__all__ = ["ReportError", "Section", "learning_curves", "sections", "render", "write_report"]
