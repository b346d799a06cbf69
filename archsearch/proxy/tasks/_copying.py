"""Copying from the context: MAD's selective copying, and MAD's compression as a causal language model can take it."""

from __future__ import annotations

import torch

from ._spec import Batch, TaskSpec, distinct, register, require


def _check_selective_copy(s: TaskSpec) -> None:
    require(s.vocab_size >= 3, "vocab_size", f"expected at least 3 (a blank, a copy marker and a token), got {s.vocab_size}")
    require(s.seq_len >= 2 * s.num_tokens + 1, "num_tokens",
            f"{s.num_tokens} tokens need seq_len >= {2 * s.num_tokens + 1} (scattered, a marker, then copied), got {s.seq_len}")


@register(
    "selective_copy",
    defaults={"vocab_size": 16, "seq_len": 256, "num_tokens": 16},
    check=_check_selective_copy,
    doc="MAD's selective copying: tokens scattered among blanks, a copy marker, then the tokens again in order",
)
def selective_copy(spec: TaskSpec, batch: int, g: torch.Generator) -> Batch:
    """num_tokens tokens (from 0..V-3) at random places among blanks (V-2) in the first T - n - 1 positions, in order;
    then the copy marker (V-1) and n blanks, at which the tokens are scored in order (MAD's layout)."""
    n, t, v = spec.num_tokens, spec.seq_len, spec.vocab_size
    blank, marker = v - 2, v - 1
    region = t - n - 1
    tokens = torch.randint(0, v - 2, (batch, n), generator=g)
    x = torch.full((batch, t), blank, dtype=torch.long)
    x.scatter_(1, distinct(batch, region, n, g).sort(dim=1).values, tokens)
    x[:, region] = marker
    y = torch.full((batch, t), -1, dtype=torch.long)
    y[:, region + 1 :] = tokens
    return x, y


def _check_compression(s: TaskSpec) -> None:
    require(s.vocab_size >= 2, "vocab_size", f"expected at least 2 (a marker and a token), got {s.vocab_size}")
    require(s.seq_len >= 2, "seq_len", f"expected at least 2, got {s.seq_len}")


@register(
    "compression",
    defaults={"vocab_size": 16, "seq_len": 32},
    check=_check_compression,
    doc="MAD's compression, causal: random tokens, then markers at which the tokens are reproduced in order",
)
def compression(spec: TaskSpec, batch: int, g: torch.Generator) -> Batch:
    """T/2 random tokens (0..V-2), then T/2 compression markers (V-1): the k-th marker scores the k-th token.
    MAD decodes the whole sequence from the marker's final state with an MLP; a causal language model can look back
    instead, so here only the recurrent mixers are held to a state that must keep every token (docs/synthetic-tasks.md)."""
    t, v = spec.seq_len, spec.vocab_size
    n = t // 2
    tokens = torch.randint(0, v - 1, (batch, n), generator=g)
    x = torch.full((batch, t), v - 1, dtype=torch.long)
    x[:, :n] = tokens
    y = torch.full((batch, t), -1, dtype=torch.long)
    y[:, n : 2 * n] = tokens
    return x, y
