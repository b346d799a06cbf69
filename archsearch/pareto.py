"""Pareto maths on arrays: which points no other point dominates, their exact hypervolume, the knee.

Every function works in the objectives' own units and directions: values are turned into "lower is better" inside
(`_as_minimised`) and never outside, so callers pass and get back what the trials measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._metric import DIRECTIONS

REFERENCE_MARGIN = 0.1  # the default reference point lies this share of each objective's range beyond its worst value


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
