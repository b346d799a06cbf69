"""How a metric is declared: the metadata that makes a field of `Cost` or `proxy.Metrics` a metric, and units.

A field becomes a metric by carrying `metric(...)` in its metadata; `archsearch.metrics` gathers them into the
registry. Declaring the metric beside the code that produces it keeps adding one a change to one file.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

METADATA_KEY = "archsearch.metric"
DIRECTIONS = {"min": "minimize", "minimize": "minimize", "max": "maximize", "maximize": "maximize"}  # as written -> canonical


def human(n: float) -> str:
    """12.3M, 1.2G, 850K: a count at a glance."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def human_bytes(n: float) -> str:
    """3.2MiB, 512.0KiB, 100B."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}B"


# how each unit reads in tables: counts and bytes at a glance, rates in whole tokens, the rest to 4 digits
_TABLE_FORMAT: dict[str, Callable[[float], str]] = {
    "count": human,
    "flops": human,
    "bytes": human_bytes,
    "tokens/s": lambda v: f"{v:,.0f}",
}


@dataclass(frozen=True)
class Requirement:
    """What the proxy settings must say for a metric to be measured."""

    met: Callable[[Any], bool]  # what the study trains -> bool: its ProxySettings (proxy metrics), its Suite or None (suite metrics)
    needs: str  # in words, as in "bits_per_byte needs the language-modelling proxy (proxy.task: lm)"


@dataclass(frozen=True)
class Metric:
    """One number a trial records."""

    name: str
    direction: str | None  # minimize or maximize: the natural direction, when an objective gives none; None for a note
    unit: str  # count, flops, bytes, tokens/s, nats, bits/byte, ratio, seconds, tokens, ..., or text (a note)
    source: str  # "cost" (the cost model, known before training), "proxy" (measured by the proxy run) or "suite" (the synthetic suite)
    doc: str
    label: str  # how `archsearch train` names it
    detail: str | None  # how `archsearch train` prints it (a str.format pattern); None: as in tables
    requires: Requirement | None
    objective: bool  # may be an objective, a front axis or (cost metrics) a constraint

    def format(self, value: Any) -> str:
        """The value for a table."""
        if self.unit == "text":
            return str(value)
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        return _TABLE_FORMAT.get(self.unit, lambda x: f"{x:.4g}")(v)

    def format_detail(self, value: Any) -> str:
        """The value as `archsearch train` prints it."""
        return self.detail.format(value) if self.detail else self.format(value)

    def problem(self, settings: Any) -> str | None:
        """Why proxy `settings` cannot measure this metric, or None."""
        if self.requires is None or self.requires.met(settings):
            return None
        return f"{self.name} needs {self.requires.needs}"


def metric(direction: str | None, unit: str, doc: str, *, label: str = "", detail: str | None = None,
           requires: Requirement | None = None, objective: bool = True) -> dict[str, Any]:
    """Field metadata that makes a dataclass field a metric: `x: float | None = field(default=None, metadata=metric(...))`.
    A note the table records beside the numbers (unit "text") has no direction and is never an objective."""
    if (direction is None) != (unit == "text") or direction not in ("minimize", "maximize", None):
        raise ValueError(f"direction {direction!r}: expected minimize or maximize (None for a text note)")
    if unit == "text" and objective:
        raise ValueError("a text note cannot be an objective")
    return {METADATA_KEY: {"direction": direction, "unit": unit, "doc": doc, "label": label, "detail": detail,
                           "requires": requires, "objective": objective}}


def metric_fields(cls: type, source: str) -> list[Metric]:
    """The metrics a dataclass declares, in field order."""
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(METADATA_KEY)
        if meta is not None:
            out.append(Metric(f.name, source=source, **{**meta, "label": meta["label"] or f.name.replace("_", " ")}))
    return out
