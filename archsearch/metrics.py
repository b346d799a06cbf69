"""The metric registry: every number a trial records, with its direction, unit, producer and requirements.

Gathered from the fields of `Cost` (the cost model) and `proxy.Metrics` (a proxy run) that carry `metric(...)`
metadata, so a new metric is one field declaration beside the code that produces it, and from the synthetic suite
(`<task>_accuracy` per registered task, `suite_score`). Objective checks, the trials table's columns, constraint
names and formatting all derive from here.
"""

from __future__ import annotations

from ._metric import DIRECTIONS, Metric, Requirement, human, human_bytes, metric, metric_fields
from .architecture import Cost
from .proxy import Metrics
from .proxy.suite import suite_metrics

METRICS: dict[str, Metric] = {m.name: m for m in (*metric_fields(Cost, "cost"), *metric_fields(Metrics, "proxy"), *suite_metrics())}
COST_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS.values() if m.source == "cost")
PROXY_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS.values() if m.source == "proxy")  # the fields of Metrics
OBJECTIVES: tuple[str, ...] = tuple(name for name, m in METRICS.items() if m.objective)
CONSTRAINTS: tuple[str, ...] = tuple(m.name for m in COST_METRICS if m.objective)  # bounds on the concrete architecture


def cost_values(cost: Cost) -> dict[str, float]:
    """The cost metrics of one architecture, by name."""
    return {m.name: getattr(cost, m.name) for m in COST_METRICS}


SOURCES = {"cost": "cost model", "proxy": "proxy", "suite": "suite"}  # how the table names each producer


def metric_table() -> str:
    """The Markdown table of the metrics, from the registry (docs/studies.md)."""
    rows = ["| metric | direction | unit | from | needs | what it is |", "| --- | --- | --- | --- | --- | --- |"]
    for m in METRICS.values():
        needs = m.requires.needs if m.requires else ""
        role = "" if m.objective else " (recorded, not an objective)"
        rows.append(f"| `{m.name}` | {(m.direction or '')[:3]} | {m.unit} | {SOURCES[m.source]}{role} | {needs} | {m.doc} |")
    return "\n".join(rows) + "\n"


def format_metric(name: str, value: float) -> str:
    """A metric's value as tables show it (21.3M, 1.5MiB, 12,345 tokens/s, 1.234)."""
    return METRICS[name].format(value)


__all__ = ["COST_METRICS", "DIRECTIONS", "human", "human_bytes", "CONSTRAINTS", "METRICS", "OBJECTIVES", "PROXY_METRICS", "Metric", "Requirement", "cost_values", "format_metric", "metric", "metric_table"]
