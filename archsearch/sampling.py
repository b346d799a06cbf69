"""Drawing architectures from a space: one define-by-run walk, driven by any sampler.

The walk asks its sampler for each value only when the value matters (a window only where `swa` was chosen), so
an Optuna trial sees the space's true conditional structure. Without Optuna it runs on seeded random choices, or
enumerates a finite space exhaustively.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .architecture import Architecture, BlockSpec, LayerSpec
from .blocks import NONE, REGISTRY
from .errors import ConstraintViolation, SpaceError
from .space import (
    At,
    BlockRef,
    Categorical,
    Every,
    Fixed,
    IntRange,
    LayerTemplate,
    Loc,
    Placement,
    Repeat,
    SearchSpace,
    Value,
)


class Sampler(Protocol):
    """What the walk asks for. Names are stable dotted keys (`layers.place[0].every`), unique per decision."""

    def categorical(self, name: str, labels: list[str]) -> int: ...
    def integer(self, name: str, low: int, high: int, step: int, log: bool) -> int: ...
    def real(self, name: str, low: float, high: float, step: float | None, log: bool) -> float: ...
    def combination(self, name: str, n: int, k: int) -> tuple[int, ...]: ...


class Infeasible(ConstraintViolation):
    """A drawn architecture breaks a rule of its block families (e.g. heads not dividing d_model)."""

    def __init__(self, message: str, loc: Loc | None) -> None:
        super().__init__(message)
        self.loc = loc

    def as_space_error(self) -> SpaceError:
        loc = self.loc or Loc("<space>", None, "")
        return SpaceError(loc.file, loc.line, loc.key, str(self))


# --- samplers -----------------------------------------------------------------------------------------------------


class RandomSampler:
    """Seeded uniform choices (log-uniform on log scales); the same seed always gives the same architecture."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)

    def categorical(self, name, labels):
        return self.rng.randrange(len(labels))

    def integer(self, name, low, high, step, log):
        if log:
            return min(high, int(math.exp(self.rng.uniform(math.log(low), math.log(high + 1)))))
        return low + step * self.rng.randrange((high - low) // step + 1)

    def real(self, name, low, high, step, log):
        if log:
            return math.exp(self.rng.uniform(math.log(low), math.log(high)))
        if step:
            return low + step * self.rng.randrange(int((high - low) / step + 1e-9) + 1)
        return self.rng.uniform(low, high)

    def combination(self, name, n, k):
        return tuple(sorted(self.rng.sample(range(n), k)))


class OptunaSampler:
    """Drives the walk from an Optuna `Trial` (or `FixedTrial` to replay a trial's parameters)."""

    # searched positions become one categorical over the combinations when there are at most this many,
    # else k integer parameters repaired to distinct positions (keeps the categorical small for TPE and NSGA-II)
    max_combinations = 1000

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def categorical(self, name, labels):
        return labels.index(self.trial.suggest_categorical(name, labels))

    def integer(self, name, low, high, step, log):
        return self.trial.suggest_int(name, low, high, step=step, log=log)

    def real(self, name, low, high, step, log):
        return self.trial.suggest_float(name, low, high, step=step, log=log)

    def combination(self, name, n, k):
        if math.comb(n, k) <= self.max_combinations:
            labels = [",".join(map(str, c)) for c in itertools.combinations(range(n), k)]
            return tuple(int(x) for x in self.trial.suggest_categorical(name, labels).split(","))
        picks = [self.trial.suggest_int(f"{name}[{j}]", 0, n - 1) for j in range(k)]
        return _distinct(picks, n)


def _distinct(picks: list[int], n: int) -> tuple[int, ...]:
    """Repair repeated positions deterministically: each repeat moves to the nearest free position."""
    taken: set[int] = set()
    for p in picks:
        for d in range(n):
            for q in (p + d, p - d):
                if 0 <= q < n and q not in taken:
                    taken.add(q)
                    break
            else:
                continue
            break
    return tuple(sorted(taken))


def as_sampler(source: Any) -> Sampler:
    """A Sampler from a Sampler, an Optuna trial, an int seed or None."""
    if source is None or isinstance(source, int):
        return RandomSampler(source)
    if hasattr(source, "suggest_categorical"):
        return OptunaSampler(source)
    return source


# --- the walk -----------------------------------------------------------------------------------------------------

_REF = object()  # where, in a block's list of parameter sources, the block's own written parameters go


@dataclass
class _Slot:
    mixer: Value
    channel: Value
    mixer_sources: list
    channel_sources: list
    required: list  # parameters of placements that set no block: some block at the slot must take each


class _Walk:
    def __init__(self, space: SearchSpace, sampler: Sampler) -> None:
        self.space, self.sampler, self.drawn = space, sampler, {}
        low, high = space.depth_bounds()
        self.depth_varies = low != high

    def draw(self, value: Value, layer: int | None = None) -> Any:
        if isinstance(value, Fixed):
            return value.value
        name = value.loc.key + (f"@{layer}" if value.per_layer and layer is not None else "")
        if name not in self.drawn:
            s = self.sampler
            if isinstance(value, Categorical):
                self.drawn[name] = value.options[s.categorical(name, value.labels())]
            elif isinstance(value, IntRange):
                self.drawn[name] = s.integer(name, value.low, value.high, value.step, value.log)
            else:
                self.drawn[name] = s.real(name, value.low, value.high, value.step, value.log)
        return self.drawn[name]

    def run(self) -> Architecture:
        space = self.space
        d_model = self.draw(space.d_model)
        tie = self.draw(space.tie_embeddings)
        if space.sequence is not None:
            templates: list[LayerTemplate] = []
            self.expand(space.sequence, templates)
        else:
            templates = [space.base] * self.draw(space.n_layers)
        slots = [_Slot(t.mixer, t.channel, [t.params, _REF], [t.params, _REF], []) for t in templates]
        for placement in space.place:
            for i in self.select(placement, len(slots)):
                self.apply(slots[i], placement.template)
        layers = tuple(self.layer(i, slot, d_model) for i, slot in enumerate(slots))
        return Architecture(d_model, layers, space.vocab_size, tie)

    def expand(self, items, out: list[LayerTemplate]) -> None:
        for item in items:
            if isinstance(item, Repeat):
                for _ in range(self.draw(item.times)):
                    self.expand(item.items, out)
            else:
                out.append(item)

    def select(self, placement: Placement, n: int) -> list[int]:
        sel = placement.selector
        if isinstance(sel, Every):
            k = self.draw(sel.k)
            offset = k - 1 if sel.offset is None else self.draw(sel.offset)
            return list(range(offset, n, k))
        if isinstance(sel, At):
            return [p % n for p in self.draw(sel.positions)]
        k = self.draw(sel.k)
        pool = [p % n for p in sel.among] if sel.among is not None else list(range(n))
        if k > len(pool):
            raise sel.loc.error(f"cannot choose {k} of {len(pool)} positions", key=f"{sel.loc.key}.positions")
        name = sel.loc.key
        if sel.among is None and self.depth_varies:
            name += f"|n={n}"  # a different pool is a different parameter (Optuna needs fixed categorical choices)
        if not isinstance(sel.k, Fixed):
            name += f"|k={k}"
        if name not in self.drawn:
            self.drawn[name] = self.sampler.combination(name, len(pool), k)
        return [pool[j] for j in self.drawn[name]]

    @staticmethod
    def apply(slot: _Slot, t: LayerTemplate) -> None:
        if t.mixer is not None:
            slot.mixer, slot.mixer_sources = t.mixer, [t.params, _REF]
        if t.channel is not None:
            slot.channel, slot.channel_sources = t.channel, [t.params, _REF]
        if t.mixer is None and t.channel is None:
            slot.mixer_sources.append(t.params)
            slot.channel_sources.append(t.params)
            slot.required.append(t.params)

    def layer(self, i: int, slot: _Slot, d_model: int) -> LayerSpec:
        mixer_ref = self.draw(slot.mixer, i)
        channel_ref = self.draw(slot.channel, i)
        mixer = self.block(i, mixer_ref, slot.mixer_sources, d_model)
        channel = None if channel_ref.family == NONE else self.block(i, channel_ref, slot.channel_sources, d_model)
        taken = set(REGISTRY[mixer_ref.family].params) | (set(channel.fam.params) if channel else set())
        for params in slot.required:
            for pname, value in params:
                if pname not in taken:
                    raise value.loc.error(f"no block at layer {i} ({mixer_ref.family}+{channel_ref.family}) takes {pname!r}")
        return LayerSpec(mixer, channel)

    def block(self, i: int, ref: BlockRef, sources: list, d_model: int) -> BlockSpec:
        fam = REGISTRY[ref.family]
        final: dict[str, Value] = dict(self.space.defaults.get(fam.name, {}))
        for source in sources:
            for pname, value in ref.params if source is _REF else source:
                if pname in fam.params:
                    final[pname] = value  # later sources override earlier ones; only the last one is drawn
        values = {pname: self.draw(value, i) for pname, value in final.items()}
        try:
            spec = BlockSpec.make(fam.name, values, d_model)
        except ValueError as e:
            raise final[e.args[0]].loc.error(f"{fam.name}.{e.args[0]}: {e.args[1]}") from None
        for pname, message in fam.violations(spec.p, d_model):
            loc = final[pname].loc if pname in final else self.space.d_model.loc
            raise Infeasible(f"layer {i} {fam.name} {pname}: {message}", loc)
        return spec


def sample(space: SearchSpace, sampler: Any = None) -> Architecture:
    """Draw one architecture. `sampler`: an Optuna trial, a Sampler, an int seed, or None for fresh randomness.

    Raises Infeasible when the drawn values break a block family's rule; the space's own constraints are checked
    separately with `space.constraints.violations(arch)`.
    """
    return _Walk(space, as_sampler(sampler)).run()


# --- enumeration and size -----------------------------------------------------------------------------------------


class ContinuousSpace(Exception):
    """Raised by `enumerate_space` on a space with a continuous parameter (it cannot be enumerated)."""


class _PathSampler:
    """Follows a fixed path of decision indices (0 beyond it) and records each decision's branching."""

    def __init__(self, path: list[int], rng: random.Random | None = None) -> None:
        self.path, self.counts, self.rng, self.continuous = path, [], rng, []

    def pick(self, count: int) -> int:
        pos = len(self.counts)
        if pos >= len(self.path):
            self.path.append(self.rng.randrange(count) if self.rng else 0)
        self.counts.append(count)
        return self.path[pos]

    def categorical(self, name, labels):
        return self.pick(len(labels))

    def integer(self, name, low, high, step, log):
        return low + step * self.pick((high - low) // step + 1)

    def real(self, name, low, high, step, log):
        if step and not log:
            return low + step * self.pick(int((high - low) / step + 1e-9) + 1)
        if self.rng is None:
            raise ContinuousSpace(name)
        self.continuous.append(name)
        self.path.append(0)
        self.counts.append(math.inf)
        return RandomSampler.real(self, name, low, high, step, log)

    def combination(self, name, n, k):
        return _unrank(self.pick(math.comb(n, k)), n, k)


def _unrank(index: int, n: int, k: int) -> tuple[int, ...]:
    """The index-th k-combination of range(n) in lexicographic order."""
    out, start = [], 0
    for remaining in range(k, 0, -1):
        for x in range(start, n):
            block = math.comb(n - x - 1, remaining - 1)
            if index < block:
                out.append(x)
                start = x + 1
                break
            index -= block
    return tuple(out)


def enumerate_space(space: SearchSpace, limit: int = 100_000) -> Iterator[Architecture | Exception]:
    """Every assignment of a finite space, in order: its architecture, or the Infeasible/SpaceError it raises.

    Stops after `limit` assignments; raises ContinuousSpace at once if the space has a continuous parameter.
    """
    path: list[int] = []
    for _ in range(limit):
        s = _PathSampler(path)
        try:
            yield _Walk(space, s).run()
        except (Infeasible, SpaceError) as e:
            yield e
        j = len(s.counts) - 1
        while j >= 0 and s.path[j] == s.counts[j] - 1:
            j -= 1
        if j < 0:
            return
        path = s.path[:j] + [s.path[j] + 1]


@dataclass(frozen=True)
class SpaceSize:
    """How big a space is. Exact counts when it could be enumerated; otherwise an estimate."""

    assignments: int | None  # distinct sets of sampler decisions, when enumerated
    architectures: int | None  # distinct normal forms among them
    feasible: int | None  # distinct normal forms that meet every family rule and the space's constraints
    estimate: float | None  # Knuth's estimate of the assignments, when too many to enumerate
    continuous: tuple[str, ...]  # continuous parameters (the space is infinite)

    def describe(self) -> str:
        if self.continuous:
            return f"infinite (continuous: {', '.join(self.continuous)})"
        if self.assignments is not None:
            return f"{self.assignments:,} assignments, {self.architectures:,} distinct architectures, {self.feasible:,} feasible"
        return f"about {self.estimate:.3g} assignments (more than can be enumerated; Knuth's estimate)"


def space_size(space: SearchSpace, limit: int = 20_000, probes: int = 2000, seed: int = 0) -> SpaceSize:
    """Count a space exactly when it has at most `limit` assignments; estimate it otherwise."""
    rng = random.Random(seed)
    estimates, continuous = [], set()
    for _ in range(probes):
        s = _PathSampler([], rng)
        with contextlib.suppress(Infeasible, SpaceError):
            _Walk(space, s).run()
        continuous.update(s.continuous)
        estimates.append(math.prod(s.counts))
    if continuous:
        return SpaceSize(None, None, None, None, tuple(sorted(continuous)))
    estimate = sum(estimates) / len(estimates)
    if estimate <= 4 * limit:
        seen, feasible, count = set(), set(), 0
        for result in enumerate_space(space, limit + 1):
            count += 1
            if isinstance(result, Architecture):
                seen.add(result)
                if not space.constraints.violations(result):
                    feasible.add(result)
        if count <= limit:
            return SpaceSize(count, len(seen), len(feasible), None, ())
    return SpaceSize(None, None, None, estimate, ())
