"""Synthetic proxies that separate attention-like mixers from convolutional ones: recall, selective copying, induction.

Each task draws batches (x [B, T], y [B, T]) whose targets are -1 except where the answer is scored; accuracy is
the share of scored positions predicted exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TaskSpec:
    """A synthetic task and its sizes."""

    name: str  # mqar | selective_copy | induction
    vocab_size: int = 64
    seq_len: int = 128
    num_kv_pairs: int = 8  # mqar: pairs stored, each queried once
    num_tokens: int = 8  # selective_copy: tokens to copy


def mqar(spec: TaskSpec, batch: int, g: torch.Generator) -> Batch:
    """Multi-query associative recall (Zoology): key-value pairs, then each key asked again; answer its value."""
    n, t, v = spec.num_kv_pairs, spec.seq_len, spec.vocab_size
    half = v // 2
    keys = _distinct(batch, half - 1, n, g) + 1  # distinct keys per row; 0 is the blank
    values = torch.randint(half, v, (batch, n), generator=g)
    x = torch.zeros(batch, t, dtype=torch.long)
    y = torch.full((batch, t), -1, dtype=torch.long)
    x[:, 0 : 2 * n : 2], x[:, 1 : 2 * n : 2] = keys, values
    positions = _distinct(batch, t - 2 * n, n, g) + 2 * n  # each key asked once, after the pairs, in random order
    x.scatter_(1, positions, keys)
    y.scatter_(1, positions, values)
    return x, y


def _distinct(batch: int, n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """k distinct integers in [0, n) per row, in random order."""
    return torch.rand(batch, n, generator=g).argsort(dim=1)[:, :k]


def selective_copy(spec: TaskSpec, batch: int, g: torch.Generator) -> Batch:
    """Tokens scattered among noise, then blanks at which the model must emit them in order (Mamba's task)."""
    k, t, v = spec.num_tokens, spec.seq_len, spec.vocab_size
    noise, blank = 0, 1
    region = t - k
    x = torch.full((batch, t), noise, dtype=torch.long)
    y = torch.full((batch, t), -1, dtype=torch.long)
    tokens = torch.randint(2, v, (batch, k), generator=g)
    x.scatter_(1, _distinct(batch, region - 1, k, g).sort(dim=1).values, tokens)
    x[:, region:] = blank
    y[:, region - 1 : t - 1] = tokens  # predicted from the position before each blank
    return x, y


def induction(spec: TaskSpec, batch: int, g: torch.Generator) -> Batch:
    """A trigger token followed by a random token; the trigger again at the end: predict that token."""
    t, v = spec.seq_len, spec.vocab_size
    trigger = v - 1
    x = torch.randint(0, v - 1, (batch, t), generator=g)
    y = torch.full((batch, t), -1, dtype=torch.long)
    first = torch.randint(0, t - 3, (batch,), generator=g)
    rows = torch.arange(batch)
    x[rows, first] = trigger
    x[:, -1] = trigger
    y[:, -1] = x[rows, first + 1]
    return x, y


TASKS: dict[str, Callable[[TaskSpec, int, torch.Generator], Batch]] = {
    "mqar": mqar,
    "selective_copy": selective_copy,
    "induction": induction,
}


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    scored = y != -1
    return (logits.argmax(-1)[scored] == y[scored]).float().mean().item()
