"""Memorisation in the weights: MAD's task of a fixed key -> value map that no sequence states."""

from __future__ import annotations

import functools

import torch

from ._spec import Batch, TaskSpec, register, require


def _check_memorization(s: TaskSpec) -> None:
    require(s.vocab_size >= 3, "vocab_size", f"expected at least 3 (an insert token, keys and values), got {s.vocab_size}")
    require(s.seq_len % 2 == 0, "seq_len", f"expected an even length (key, insert token pairs), got {s.seq_len}")


@functools.lru_cache(maxsize=16)
def kv_map(vocab_size: int, seed: int) -> torch.Tensor:
    """The fixed map of memorization: key i (0..K-1) -> value map[i] (K..2K-1), K = (vocab_size - 1) // 2, a
    permutation drawn from `seed` alone, the same for every batch, trial and machine."""
    keys = (vocab_size - 1) // 2
    return torch.randperm(keys, generator=torch.Generator().manual_seed(seed)) + keys


@register(
    "memorization",
    defaults={"vocab_size": 256, "seq_len": 32, "kv_map_seed": 12345},
    check=_check_memorization,
    doc="MAD's memorization: keys each followed by an insert token, at which the key's value in a fixed map is scored",
)
def memorization(spec: TaskSpec, batch: int, g: torch.Generator) -> Batch:
    """T/2 pairs (key, insert token V-1); at each insert token the key's value under `kv_map` is scored."""
    t, v = spec.seq_len, spec.vocab_size
    table = kv_map(v, spec.kv_map_seed)
    keys = torch.randint(0, len(table), (batch, t // 2), generator=g)
    x = torch.full((batch, t), v - 1, dtype=torch.long)
    x[:, 0::2] = keys
    y = torch.full((batch, t), -1, dtype=torch.long)
    y[:, 1::2] = table[keys]
    return x, y
