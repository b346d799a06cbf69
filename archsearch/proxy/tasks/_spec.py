"""What a synthetic task is: its settings (`TaskSpec`), its registry entry (`Task`), its input errors, its score."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ...architecture import MAX_CONTEXT, MAX_VOCAB
from ...errors import ArchsearchError

Batch = tuple[torch.Tensor, torch.Tensor]  # x [B, T] token ids; y [B, T] the answer at scored positions, -1 elsewhere
KEY = "proxy.synthetic"  # where a study file sets these; errors name their key under it


class TaskError(ArchsearchError):
    """A synthetic task's settings that cannot make its sequences: names the setting's key and what was expected."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")


@dataclass(frozen=True)
class TaskSpec:
    """A synthetic task and its sizes. Settings left None take the task's defaults (MAD's, Zoology's for mqar);
    a setting the task does not read is an error, so a typo never runs silently as the default."""

    name: str | None = None  # a key of TASKS
    vocab_size: int | None = None
    seq_len: int | None = None
    num_kv_pairs: int | None = None  # mqar: pairs stored, each queried once (every held-out row)
    min_kv_pairs: int | None = None  # mqar: training rows mix num_kv_pairs, /2, /4 ... down to this (Zoology's mixture; default 4)
    power_a: float | None = None  # mqar: query gaps follow p(gap) ~ gap^(power_a - 1); 1 is uniform
    random_non_queries: bool | None = None  # mqar: filler between queries is random tokens, not a blank
    num_tokens: int | None = None  # selective_copy: tokens to copy
    frac_noise: float | None = None  # recall, memorization: share of pairs replaced by noise tokens
    noise_vocab_size: int | None = None  # tokens set aside as noise, out of vocab_size
    k_motif_size: int | None = None  # fuzzy_recall: keys are 1..k_motif_size tokens long
    v_motif_size: int | None = None  # fuzzy_recall: values are 1..v_motif_size tokens long
    kv_map_seed: int | None = None  # memorization: the seed of the fixed key -> value map to memorise

    def __post_init__(self) -> None:
        if self.name is None:
            raise TaskError(f"{KEY}.name", f"missing; expected one of {', '.join(TASKS)}")
        if self.name not in TASKS:
            raise TaskError(f"{KEY}.name", f"unknown task {self.name!r}; expected one of {', '.join(TASKS)}")
        task = TASKS[self.name]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "name":
                continue
            if f.name not in task.defaults:
                if value is not None:
                    raise TaskError(f"{KEY}.{f.name}", f"{self.name} has no such setting; it takes {', '.join(task.defaults)}")
                continue
            if value is None:
                value = task.defaults[f.name]
                object.__setattr__(self, f.name, value(self) if callable(value) else value)
            _check_type(f.name, getattr(self, f.name), type(task.defaults[f.name]))
        task.check(self)

    def settings(self) -> dict[str, Any]:
        """The settings this task reads, resolved: what a results row records."""
        return {"name": self.name, **{k: getattr(self, k) for k in TASKS[self.name].defaults}}


_MAY_BE_ZERO = {"noise_vocab_size", "kv_map_seed"}
_MOST = {"vocab_size": MAX_VOCAB, "noise_vocab_size": MAX_VOCAB, "kv_map_seed": (1 << 63) - 1}


def _check_type(name: str, value: Any, kind: type) -> None:
    """Counts and sizes are positive integers, shares are numbers, flags are booleans (callable defaults: counts)."""
    if kind is bool:
        ok = isinstance(value, bool)
        expected = "true or false"
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        expected = "a number"
    else:
        least = 0 if name in _MAY_BE_ZERO else 1
        most = _MOST.get(name, MAX_CONTEXT)  # a count never exceeds a sequence; sizes are bounded, never an OOM
        ok = isinstance(value, int) and not isinstance(value, bool) and least <= value <= most
        expected = f"{'a non-negative' if least == 0 else 'a positive'} integer of at most {most:,}"
    if not ok:
        raise TaskError(f"{KEY}.{name}", f"expected {expected}, got {value!r}")


Generate = Callable[[TaskSpec, int, torch.Generator], Batch]


@dataclass(frozen=True)
class Task:
    """A registered task: its generator, its default settings (a value, or a function of the spec resolved so far),
    a check of a resolved spec that raises TaskError, and the spec its held-out rows use (a training mixture is
    scored on its hardest member). Calling it draws a batch: task(spec, batch, generator)."""

    name: str
    generate: Generate
    defaults: dict[str, Any]
    check: Callable[[TaskSpec], None]
    doc: str
    held_out: Callable[[TaskSpec], TaskSpec]  # the spec of the held-out rows (the training one, unless a mixture)

    def __call__(self, spec: TaskSpec, batch: int, g: torch.Generator) -> Batch:
        return self.generate(spec, batch, g)


TASKS: dict[str, Task] = {}


def _same(spec: TaskSpec) -> TaskSpec:
    return spec


def register(name: str, defaults: dict[str, Any], check: Callable[[TaskSpec], None], doc: str,
             held_out: Callable[[TaskSpec], TaskSpec] = _same) -> Callable[[Generate], Generate]:
    """Decorator: make a generator known by `name` to proxies, studies and the suite."""

    def add(generate: Generate) -> Generate:
        if name in TASKS:
            raise ArchsearchError(f"synthetic task {name!r} is registered twice")
        TASKS[name] = Task(name, generate, defaults, check, doc, held_out)
        return generate

    return add


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise TaskError(f"{KEY}.{key}", message)


def distinct(batch: int, n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """k distinct integers in [0, n) per row, in random order: each row a uniform draw without replacement. The
    batches are drawn on the host between GPU steps, so this is kept cheap: where n is large against k, 2k draws
    with replacement and the first occurrences kept in draw order (sequential sampling without replacement, a
    fraction of a millisecond at Zoology's 4,096 keys); otherwise, or in the rare batch where 2k draws hold fewer
    than k distinct values, the top k of n uniform numbers."""
    if n >= 16 * k:
        draws = torch.randint(0, n, (batch, 2 * k), generator=g)
        value, order = draws.sort(dim=1, stable=True)  # equal values in draw order: the first occurrence leads
        again = torch.zeros_like(draws, dtype=torch.bool)
        again[:, 1:] = value[:, 1:] == value[:, :-1]
        first = torch.empty_like(again).scatter_(1, order, ~again)
        if bool((first.sum(1) >= k).all()):
            return draws[first & (first.cumsum(1) <= k)].view(batch, k)
    return torch.rand(batch, n, generator=g).topk(k, dim=1).indices


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The share of scored positions (y != -1) whose most likely token is the answer."""
    scored = y != -1
    return (logits.argmax(-1)[scored] == y[scored]).float().mean().item()
