"""Loading a search space for use: parse it (`archsearch.space`), then probe it once for a feasible architecture.

This sits above sampling because the probe draws architectures; the space module itself only parses. A study's
constraints are probed together with its space's (`check_feasible(space, constraints)`), once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from . import _yaml
from .architecture import Architecture
from .errors import SpaceError
from .metrics import format_metric
from .sampling import ContinuousSpace, Infeasible, RandomSampler, enumerate_space, sample
from .space import Constraints, SearchSpace, parse_space

EXHAUSTIVE_LIMIT = 2000  # spaces with at most this many assignments are probed completely


def load_space(path: str) -> SearchSpace:
    """Read, parse and validate a search-space YAML file, refusing one that holds no feasible architecture."""
    space = read_space_file(path)
    check_feasible(space)
    return space


def space_from_yaml(text: str, file: str = "<space>") -> SearchSpace:
    """Parse and validate search-space YAML text (see `load_space`)."""
    space = parse_space(_yaml.load(text, file), text)
    check_feasible(space)
    return space


def read_space_file(path: str) -> SearchSpace:
    """Read and parse a search-space file, without the feasibility probe."""
    text = read_space_text(path)
    return parse_space(_yaml.load(text, path), text)


def read_space_text(path: str) -> str:
    """A search-space file's text (a regular UTF-8 file within the size limit); anything else is a SpaceError with
    the line where it can have one."""
    return _yaml.read_text(path)


class _CornerSampler(RandomSampler):
    """Random choices for categories, but every number at the low (or high) end: probes the cost extremes."""

    def __init__(self, high: bool, seed: int) -> None:
        super().__init__(seed)
        self.high = high

    def integer(self, name, low, high, step, log):
        return high if self.high else low

    def real(self, name, low, high, step, log):
        return high if self.high else low


def probe(space: SearchSpace, samples: int = 300, seed: int = 0) -> tuple[list, bool]:
    """Architectures (or their Infeasible errors) covering the space: all of it when small, else a sample."""
    everything = list(itertools.islice(_enumerate_finite(space), EXHAUSTIVE_LIMIT + 1))
    if everything and len(everything) <= EXHAUSTIVE_LIMIT:
        return everything, True
    out = []
    for i in range(samples):
        sampler = _CornerSampler(i % 2 == 1, seed + i) if i < 20 else RandomSampler(seed + i)
        try:
            out.append(sample(space, sampler))
        except Infeasible as e:
            out.append(e)
    return out, False


def _enumerate_finite(space: SearchSpace) -> Iterator[Architecture | Exception]:
    """enumerate_space that stops quietly on a continuous space (the caller falls back to sampling)."""
    try:
        for result in enumerate_space(space, EXHAUSTIVE_LIMIT + 1):
            if isinstance(result, SpaceError):
                raise result
            yield result
    except ContinuousSpace:
        return


def check_feasible(space: SearchSpace, constraints: Constraints | None = None) -> None:
    """Refuse a space in which no architecture meets the family rules, or one of the bounds of `constraints`
    (default: the space's own)."""
    constraints = space.constraints if constraints is None else constraints
    results, exhaustive = probe(space)
    where = f"of all {len(results)} in the space" if exhaustive else f"of {len(results)} sampled"
    archs = [r for r in results if isinstance(r, Architecture)]
    if not archs:
        raise results[0].as_space_error()
    for bound in constraints.bounds:
        values = [getattr(a.cost(bound.context, bound.dtype_bytes), bound.metric) for a in archs]
        if all(bound.violation(v) for v in values):
            raise bound.loc.error(
                f"impossible: no architecture {where} satisfies it ({bound.metric} seen "
                f"{format_metric(bound.metric, min(values))}..{format_metric(bound.metric, max(values))})"
            )
