"""Learning-curve extrapolation: a saturating power law L(t) = a + b * t^(-c) fitted to a run's evaluations.

A short run's validation history says where its loss is heading; the fit predicts the loss (or bits per byte) at a
larger token budget, so an architecture can be ranked on where it would end rather than where it stopped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MIN_POINTS = 3  # three parameters: fewer points cannot pin the curve down
C_BOUNDS = (0.05, 3.0)  # exponents seen in language-model scaling lie well inside; the bounds keep the fit sane


@dataclass(frozen=True)
class PowerLaw:
    """L(t) = a + b * t^(-c); `fitted` is False for the fallback (the last value, held flat)."""

    a: float
    b: float
    c: float
    fitted: bool

    def __call__(self, tokens: float | np.ndarray) -> float | np.ndarray:
        return self.a + self.b * np.power(np.asarray(tokens, dtype=float), -self.c)


def fit_power_law(tokens: Sequence[float], losses: Sequence[float]) -> PowerLaw:
    """Least-squares fit of a + b * t^(-c) with a >= 0, b >= 0 and c in C_BOUNDS.

    Tokens are scaled by the last one inside the fit (t^(-c) of millions underflows the optimiser's steps otherwise).
    With fewer than MIN_POINTS finite points, or when the optimiser fails, the fallback is the last value held flat:
    a curve that predicts no further progress, never a wild one.
    """
    from scipy.optimize import curve_fit

    t = np.asarray(tokens, dtype=float)
    y = np.asarray(losses, dtype=float)
    keep = np.isfinite(t) & np.isfinite(y) & (t > 0)
    t, y = t[keep], y[keep]
    if len(t) == 0:
        raise ValueError("fit_power_law: no finite (tokens > 0, loss) points")
    flat = PowerLaw(float(y[np.argmax(t)]), 0.0, 1.0, fitted=False)
    if len(np.unique(t)) < MIN_POINTS:
        return flat
    scale = t.max()
    s = t / scale
    low = max(0.0, float(y.min()) - 10 * float(np.ptp(y)) - 1e-6)

    def model(x, a, b, c):
        return a + b * np.power(x, -c)

    guess = (max(low, float(y.min()) - 0.5 * float(np.ptp(y))), max(float(np.ptp(y)), 1e-6), 0.5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an ill-conditioned covariance is no reason to distrust the point estimate
            (a, b_scaled, c), _ = curve_fit(model, s, y, p0=guess, bounds=([low, 0.0, C_BOUNDS[0]], [float(y.min()), np.inf, C_BOUNDS[1]]),
                                             maxfev=20_000)
    except (RuntimeError, ValueError):
        return flat
    if not all(math.isfinite(v) for v in (a, b_scaled, c)):
        return flat
    return PowerLaw(float(a), float(b_scaled * scale**c), float(c), fitted=True)  # b in unscaled tokens


def extrapolate(history: Sequence[Mapping[str, float]], target_tokens: float, key: str = "bits_per_byte") -> float | None:
    """The value of `key` the power law fitted to `history` (a proxy run's evaluations, each with `tokens`) predicts
    at `target_tokens`; None when the history has no such value.

    A wsd run's evaluations after its decay began (marked `decayed`) drop faster than the power law of its stable
    phase: read as part of the curve, they make it far too steep. So with at least MIN_POINTS stable evaluations the
    law is fitted to those alone, and the decay's gain at the run's end (its last value below the law there) is
    added to the prediction, as the target run's own decay will add about as much. On the H200 validation of
    studies/gpu.yaml this halved the error against the 10x runs and ranked them better than fitting every point
    (benchmarks/RESULTS.md).
    """
    points = [(p["tokens"], p[key], bool(p.get("decayed"))) for p in history if p.get(key) is not None and p.get("tokens")]
    if not points:
        return None
    stable = [(t, v) for t, v, decayed in points if not decayed]
    if len({t for t, _ in stable}) >= MIN_POINTS and len(stable) < len(points):
        law = fit_power_law([t for t, _ in stable], [v for _, v in stable])
        end_tokens, end_value, _ = max(points, key=lambda p: p[0])
        return float(law(target_tokens)) + end_value - float(law(end_tokens))
    law = fit_power_law([t for t, _, _ in points], [v for _, v, _ in points])
    return float(law(target_tokens))


def predicted_bits_per_byte(history: Sequence[Mapping[str, float]], target_tokens: float) -> float | None:
    """Bits per byte at `target_tokens`, extrapolated from a language-modelling proxy run's history (None for a
    synthetic task, whose history has no bits per byte). What a trial reports as `predicted_bits_per_byte`."""
    return extrapolate(history, target_tokens, "bits_per_byte")
