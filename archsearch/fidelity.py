"""How far a cheap measurement can be trusted: rank agreement between two fidelities, the spread of an objective
over seeds, and promotion up a fidelity ladder on all objectives (MO-ASHA's rule).

Pure functions on arrays and tables; `archsearch validate` and the study layer call them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .pareto import pareto_mask

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A statistic with its bootstrap confidence interval (NaN where it is undefined, e.g. fewer than 3 points)."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float | None]:
        return {k: (None if np.isnan(v) else float(v)) for k, v in (("value", self.value), ("low", self.low), ("high", self.high))}


@dataclass(frozen=True)
class RankAgreement:
    """How well a cheap ranking (`cheap`) predicts an expensive one (`costly`) over the same n items."""

    n: int
    kendall_tau: Interval
    spearman_rho: Interval
    k: int
    top_k_overlap: int  # how many of the costly ranking's best k are among the cheap ranking's best k

    def to_dict(self) -> dict:
        return {"n": self.n, "kendall_tau": self.kendall_tau.to_dict(), "spearman_rho": self.spearman_rho.to_dict(),
                "k": self.k, "top_k_overlap": self.top_k_overlap}


def rank_agreement(cheap: Sequence[float], costly: Sequence[float], direction: str = "minimize", k: int = 3,
                   confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0) -> RankAgreement:
    """Kendall's tau-b and Spearman's rho between paired measurements, each with a paired percentile-bootstrap
    interval, and the top-k overlap (best = lowest for `minimize`, highest for `maximize`)."""
    from scipy import stats

    x, y = np.asarray(cheap, dtype=float), np.asarray(costly, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"rank_agreement: expected two equal-length 1-D sequences, got shapes {x.shape} and {y.shape}")
    n = len(x)
    k = min(k, n)
    order = (lambda v: np.argsort(v, kind="stable")) if direction == "minimize" else (lambda v: np.argsort(-v, kind="stable"))
    overlap = len(set(order(x)[:k]) & set(order(y)[:k]))

    def interval(statistic) -> Interval:
        value = float(statistic(x, y))
        if n < 3:
            return Interval(value, float("nan"), float("nan"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resamples with tied or constant values are expected; NaN says so below
            res = stats.bootstrap((x, y), statistic, paired=True, vectorized=True, n_resamples=resamples, batch=200, method="percentile",
                                  confidence_level=confidence, rng=np.random.default_rng(seed))
        # a resample that repeats one pair n times has no ranking (NaN): the interval is over those that have one
        tail = 100 * (1 - confidence) / 2
        low, high = np.nanpercentile(res.bootstrap_distribution, [tail, 100 - tail])
        return Interval(value, float(low), float(high))

    return RankAgreement(n, interval(kendall_tau), interval(spearman_rho), k, overlap)


def kendall_tau(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Kendall's tau-b along `axis`, vectorised over the other axes (the bootstrap's thousands of resamples in one
    call; equal to scipy.stats.kendalltau, which takes one pair of vectors at a time). NaN where a side is constant."""
    x, y = np.moveaxis(np.asarray(x, dtype=float), axis, -1), np.moveaxis(np.asarray(y, dtype=float), axis, -1)
    dx = np.sign(x[..., :, None] - x[..., None, :])
    dy = np.sign(y[..., :, None] - y[..., None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (dx * dy).sum((-2, -1)) / np.sqrt((dx * dx).sum((-2, -1)) * (dy * dy).sum((-2, -1)))


def spearman_rho(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along `axis` (Pearson's correlation of average ranks), vectorised like `kendall_tau`."""
    from scipy.stats import rankdata

    rx = rankdata(x, axis=axis)
    ry = rankdata(y, axis=axis)
    rx = rx - rx.mean(axis, keepdims=True)
    ry = ry - ry.mean(axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(axis) / np.sqrt((rx * rx).sum(axis) * (ry * ry).sum(axis))


@dataclass(frozen=True)
class SeedSpread:
    """An objective over N seeds: what the study optimises (the mean) and how much seeds disagree."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for one seed
    sem: float  # standard error of the mean
    low: float
    high: float


def seed_spread(values: Sequence[float | None]) -> SeedSpread:
    """Mean and spread of one objective over repeats with different seeds. Missing or non-finite values (a seed
    that diverged) are left out; with none left every field is NaN."""
    v = np.array([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        nan = float("nan")
        return SeedSpread(0, nan, nan, nan, nan, nan)
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return SeedSpread(len(v), float(v.mean()), std, std / np.sqrt(len(v)), float(v.min()), float(v.max()))


def seed_spreads(repeats: Sequence[Mapping[str, float | None]], metrics: Sequence[str]) -> dict[str, SeedSpread]:
    """`seed_spread` of each metric over the repeats' results (one mapping per seed)."""
    return {m: seed_spread([r.get(m) for r in repeats]) for m in metrics}


# --- promotion up a fidelity ladder (MO-ASHA) --------------------------------------------------------------------------


def nondominated_ranks(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Each row's non-dominated front (0: no row dominates it; 1: only rows of front 0 do; ...), by peeling fronts."""
    v = np.asarray(values, dtype=float)
    ranks = np.full(len(v), -1)
    left = np.arange(len(v))
    front = 0
    while len(left):
        mask = pareto_mask(v[left], directions)
        ranks[left[mask]] = front
        left = left[~mask]
        front += 1
    return ranks


def crowding_distance(values: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row within its set: per objective, the gap between its two neighbours
    as a share of the objective's range, summed; the extremes of each objective get infinity (always kept)."""
    v = np.asarray(values, dtype=float).reshape(len(values), -1)
    n = len(v)
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(v.shape[1]):
        order = np.argsort(v[:, j], kind="stable")
        spread = v[order[-1], j] - v[order[0], j]
        distance[order[[0, -1]]] = np.inf
        if spread > 0:
            distance[order[1:-1]] += (v[order[2:], j] - v[order[:-2], j]) / spread
    return distance


def promotion_order(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Rows best first on all objectives at once: by non-dominated front, then by crowding distance within it (the
    spread-out points of a front before the crowded ones). Rows with a missing or non-finite value come last."""
    v = np.asarray(values, dtype=float).reshape(len(values), len(directions))
    finite = np.isfinite(v).all(1)
    rows = np.flatnonzero(finite)
    ranks = nondominated_ranks(v[rows], directions)
    crowding = np.zeros(len(rows))
    for front in np.unique(ranks):
        members = ranks == front
        crowding[members] = crowding_distance(v[rows][members])
    order = rows[np.lexsort((rows, -crowding, ranks))]  # by front, then most isolated, then trial order
    return np.concatenate([order, np.flatnonzero(~finite)])


def promote(values: np.ndarray, directions: Sequence[str], keep: float) -> np.ndarray:
    """MO-ASHA's rule at one rung: which of the rung's trials (rows of `values`, one column per objective) go on to
    the next rung: the best `keep` share (at least one) in `promotion_order`, never a trial with a missing value."""
    v = np.asarray(values, dtype=float).reshape(len(values), len(directions))
    if not 0 < keep <= 1:
        raise ValueError(f"promote: keep must be a share in (0, 1], got {keep}")
    count = min(max(1, int(len(v) * keep)), int(np.isfinite(v).all(1).sum()))
    return promotion_order(v, directions)[:count]
