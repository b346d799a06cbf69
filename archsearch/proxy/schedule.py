"""The learning-rate schedule of a proxy run, and where a fidelity ladder's rungs branch off it.

`wsd` (warm-up, stable, decay; Hu et al. 2024's MiniCPM, Hägele et al. 2024) is the default because runs of
different budgets share their prefix: the warm-up is a fixed number of tokens and the learning rate then holds at
its peak, so a 1M-token proxy is the first 0.8M tokens of the 10M-token run plus its own short decay. A proxy that
is a prefix of the long run ranks architectures as the long run does early on; a proxy with its own full cosine
does not (issue 14: Kendall tau 0.21 against 10x). The same property lets a ladder's rungs branch off one run: each
rung decays from the stable phase, is evaluated, and the run goes on from the stable state as if the branch had
not happened.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("wsd", "cosine", "constant")


@dataclass(frozen=True)
class Schedule:
    """The multiplier of the peak learning rate at each step (steps count from 1) of a run of `steps` steps."""

    kind: str  # one of SCHEDULES
    steps: int
    warmup: int  # steps of linear warm-up
    decay: int  # wsd: the last `decay` steps decay linearly to min_ratio
    min_ratio: float

    @classmethod
    def plan(cls, kind: str, steps: int, warmup_steps: int, decay_share: float, min_ratio: float) -> Schedule:
        """The schedule of a run of `steps` steps: the warm-up and the decay (a share of the steps) are clamped so
        that at least one step lies in each phase a schedule has."""
        warmup = max(1, min(warmup_steps, steps - 1)) if steps > 1 else 1
        decay = min(max(1, round(decay_share * steps)), max(0, steps - warmup)) if kind == "wsd" and decay_share > 0 else 0
        return cls(kind, steps, warmup, decay, min_ratio)

    @property
    def stable_end(self) -> int:
        """The last step before the decay (wsd); the last step for the other schedules."""
        return self.steps - self.decay

    def __call__(self, step: int) -> float:
        if step <= self.warmup:
            return step / self.warmup
        if self.kind == "constant":
            return 1.0
        if self.kind == "cosine":
            progress = (step - self.warmup) / max(1, self.steps - self.warmup)
            return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if step <= self.stable_end:
            return 1.0
        return 1.0 - (1.0 - self.min_ratio) * (step - self.stable_end) / self.decay
