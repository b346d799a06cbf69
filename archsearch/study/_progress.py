"""What `archsearch run` prints as trials finish: counts, time left, the best value of each objective, front size."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..pareto import pareto_mask
from ._config import Fidelity, Objective

PRINT_EVERY = 30.0  # seconds between progress lines while no trial finishes


class Progress:
    def __init__(self, objectives: Sequence[Objective], total: int, fidelity: Fidelity | None = None,
                 busy: Callable[[], str] = str) -> None:
        self.objectives, self.total = tuple(objectives), total
        self.fidelity = fidelity  # with a ladder, only its top rung's trials count for the best values and the front
        self.busy = busy  # the GPUs' busy share so far ("GPU busy 87%"), or "" when it is not measured
        self.start = time.time()
        self.last_print = 0.0
        self.finished_now = 0

    def due(self) -> bool:
        return time.time() - self.last_print > PRINT_EVERY

    def show(self, rows: list[dict[str, Any]], running: int, row: dict[str, Any] | None) -> None:
        """One line (two when `row`, a trial that just finished, is given) over the table's `rows`."""
        if row is not None:
            self.finished_now += 1
        self.last_print = time.time()
        failed = sum(r["status"] not in ("ok", "pruned") for r in rows)
        elapsed = time.time() - self.start
        left = self.total - len(rows)
        eta = f", about {duration(elapsed / self.finished_now * left)} left" if self.finished_now and left > 0 else ""
        ok = [r for r in rows if r["status"] == "ok" and all(_number(r.get(o.metric)) for o in self.objectives) and not self.stopped(r)]
        best = []
        for o in self.objectives:
            if ok:
                v, t = (min if o.direction == "minimize" else max)((r[o.metric], r["trial"]) for r in ok)
                best.append(f"{o.metric} {_short(v)} (#{t})")
        values = [[r[o.metric] for o in self.objectives] for r in ok]
        front = int(pareto_mask(np.array(values, dtype=float), [o.direction for o in self.objectives]).sum()) if ok else 0
        stop = f" (stopped at rung {row['rung']})" if row and self.stopped(row) else ""
        head = f"trial {row['trial']} {row['status']}{stop}: {row['summary'] or str(row['reason'])[:80]}\n" if row else ""
        print(f"{head}[{duration(elapsed)}] {len(rows)}/{self.total} finished, {running} running, {failed} failed{eta}"
              f"{'; best ' + ', '.join(best) if best else ''}; front {front}{'; ' + busy if (busy := self.busy()) else ''}", flush=True)

    def stopped(self, row: dict[str, Any]) -> bool:
        """Whether the fidelity ladder stopped this trial below its top rung."""
        return self.fidelity is not None and self.fidelity.stopped(row)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _short(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
