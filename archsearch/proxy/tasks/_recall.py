"""Recall from the context: Zoology's multi-query associative recall, MAD's in-context recall (plain, noisy, fuzzy),
and single-query induction."""

from __future__ import annotations

import dataclasses

import torch

from ._spec import Batch, TaskSpec, distinct, register, require


def _check_mqar(s: TaskSpec) -> None:
    n, keys = s.num_kv_pairs, s.vocab_size // 2 - 1
    require(s.vocab_size >= 4, "vocab_size", f"expected at least 4 (a blank, keys and values), got {s.vocab_size}")
    require(n <= keys, "num_kv_pairs", f"{n} pairs need {n} distinct keys, but vocab_size {s.vocab_size} has {keys} "
            f"(keys are 1..vocab_size/2-1); raise vocab_size to at least {2 * n + 2} or lower num_kv_pairs")
    require(4 * n <= s.seq_len, "num_kv_pairs", f"{n} pairs and their {n} queries need seq_len >= {4 * n} "
            f"(2 tokens a pair, a query every other position), got seq_len {s.seq_len}")
    require(s.power_a > 0, "power_a", f"expected a number above 0 (1 is uniform gaps), got {s.power_a}")
    require(s.min_kv_pairs <= n, "min_kv_pairs", f"expected at most num_kv_pairs ({n}), got {s.min_kv_pairs}")


def _pair_counts(s: TaskSpec) -> list[int]:
    """The training mixture: num_kv_pairs, halved while it stays at or above min_kv_pairs."""
    counts = [s.num_kv_pairs]
    while counts[-1] // 2 >= s.min_kv_pairs:
        counts.append(counts[-1] // 2)
    return counts


@register(
    "mqar",
    defaults={"vocab_size": 8192, "seq_len": 256, "num_kv_pairs": lambda s: s.seq_len // 4, "min_kv_pairs": lambda s: min(4, s.num_kv_pairs),
              "power_a": 0.01, "random_non_queries": True},
    check=_check_mqar,
    doc="Zoology's multi-query associative recall: key-value pairs, then every key asked again; answer its value",
    held_out=lambda s: dataclasses.replace(s, min_kv_pairs=s.num_kv_pairs),
)
def mqar(spec: TaskSpec, batch: int, g: torch.Generator) -> Batch:
    """Zoology's layout: pairs k1 v1 k2 v2 ... (distinct keys from 1..V/2-1, distinct values from V/2..V-1), then
    each key once more at an even offset of the rest, the offsets drawn by a power law favouring short gaps; the
    answer (its value) is scored at the query's position. Everything else is random tokens (or blank 0).
    Training rows draw their pair count from num_kv_pairs, /2, /4 ... down to min_kv_pairs (4 by default), as Zoology
    trains on a mixture of sizes: the small ones teach the lookup, the large ones its capacity. Held-out rows all
    have num_kv_pairs (min_kv_pairs = num_kv_pairs: one size throughout)."""
    n_max, t, v = spec.num_kv_pairs, spec.seq_len, spec.vocab_size
    half = v // 2
    counts = torch.tensor(_pair_counts(spec))
    n = counts[torch.randint(0, len(counts), (batch,), generator=g)] if len(counts) > 1 else counts.expand(batch)
    used = torch.arange(n_max) < n[:, None]  # [B, n_max]: pair j is in row b
    keys = distinct(batch, half - 1, n_max, g) + 1
    values = distinct(batch, v - half, n_max, g) + half
    if spec.random_non_queries:
        x = torch.randint(0, v, (batch, t + 1), generator=g)
    else:
        x = torch.zeros(batch, t + 1, dtype=torch.long)
    y = torch.full((batch, t + 1), -1, dtype=torch.long)  # column t takes the writes of unused pairs, then goes
    pairs = torch.stack((keys, values), dim=2).flatten(1)
    x[:, : 2 * n_max] = torch.where(used.repeat_interleave(2, dim=1), pairs, x[:, : 2 * n_max])
    # each row's queries at even offsets of its own rest (t - 2n tokens), drawn without replacement
    slots = (t - 2 * n) // 2
    weight = torch.arange(1, int(slots.max()) + 1, dtype=torch.float64) ** (spec.power_a - 1)
    weight = torch.where(torch.arange(len(weight)) < slots[:, None], weight, 0.0)
    gaps = torch.multinomial(weight, n_max, replacement=False, generator=g)
    positions = torch.where(used, 2 * n[:, None] + 2 * gaps, t)
    x.scatter_(1, positions, keys)
    y.scatter_(1, positions, values)
    return x[:, :t].contiguous(), y[:, :t].contiguous()


def _check_recall(s: TaskSpec) -> None:
    require(s.seq_len % 2 == 0 and s.seq_len >= 4, "seq_len", f"expected an even length of at least 4, got {s.seq_len}")
    require(0 <= s.frac_noise < 1, "frac_noise", f"expected a share in [0, 1), got {s.frac_noise}")
    require(s.vocab_size - s.noise_vocab_size >= 2, "noise_vocab_size",
            f"{s.noise_vocab_size} noise tokens leave {s.vocab_size - s.noise_vocab_size} of vocab_size {s.vocab_size} "
            "for keys and values; at least 2 are needed")
    require(s.frac_noise == 0 or s.noise_vocab_size >= 1, "noise_vocab_size", f"frac_noise {s.frac_noise} needs noise tokens, got 0")


def in_context_recall(spec: TaskSpec, batch: int, g: torch.Generator) -> Batch:
    """MAD's multi-query in-context recall: T/2 key-value pairs with keys drawn with repeats (each sequence its own
    key -> value map); whenever a key comes again, its value is scored. A share `frac_noise` of the pairs are noise
    tokens instead. The last pair always repeats an earlier key, so every sequence asks at least once."""
    t, v, nv = spec.seq_len, spec.vocab_size, spec.noise_vocab_size
    pairs, symbols = t // 2, v - nv
    n_keys = symbols // 2
    rows = torch.arange(batch)[:, None]
    keys = torch.randint(0, n_keys, (batch, pairs), generator=g)
    noise = torch.rand(batch, pairs, generator=g) < spec.frac_noise
    anchor = torch.randint(0, pairs - 1, (batch,), generator=g)  # a real pair the last one repeats
    noise[torch.arange(batch), anchor] = False
    noise[:, -1] = False
    keys[:, -1] = keys[torch.arange(batch), anchor]
    table = torch.randint(n_keys, symbols, (batch, n_keys), generator=g)  # this sequence's key -> value map
    values = table[rows, keys]
    # a key is asked when a real pair with the same key came earlier: compare with each key's first real position
    first = torch.full((batch, n_keys + 1), pairs, dtype=torch.long)
    slot = torch.where(noise, n_keys, keys)
    first.scatter_reduce_(1, slot, torch.arange(pairs).expand(batch, pairs), reduce="amin")
    asked = ~noise & (torch.arange(pairs) > first[rows, slot])
    x = torch.stack((keys, values), dim=2).flatten(1)
    if nv:
        x = torch.where(noise.repeat_interleave(2, dim=1), torch.randint(symbols, v, (batch, t), generator=g), x)
    y = torch.full((batch, t), -1, dtype=torch.long)
    y[:, 0::2] = torch.where(asked, values, -1)  # scored at the key: the next token is its value
    return x, y


register(
    "in_context_recall",
    defaults={"vocab_size": 16, "seq_len": 128, "frac_noise": 0.0, "noise_vocab_size": 0},
    check=_check_recall,
    doc="MAD's in-context recall: a per-sequence key-value map, every repeated key asks its value",
)(in_context_recall)
register(
    "noisy_recall",
    defaults={"vocab_size": 32, "seq_len": 128, "frac_noise": 0.2, "noise_vocab_size": 16},
    check=_check_recall,
    doc="MAD's noisy in-context recall: in-context recall with a fifth of the pairs replaced by noise tokens",
)(in_context_recall)


def _check_fuzzy(s: TaskSpec) -> None:
    symbols = s.vocab_size - 1
    require(symbols >= 2, "vocab_size", f"expected at least 3 (a pad, keys and values), got {s.vocab_size}")
    require(s.seq_len >= 2 * (s.k_motif_size + s.v_motif_size), "seq_len",
            f"expected at least {2 * (s.k_motif_size + s.v_motif_size)} (two pairs of the longest motifs), got {s.seq_len}")


@register(
    "fuzzy_recall",
    defaults={"vocab_size": 16, "seq_len": 128, "k_motif_size": 3, "v_motif_size": 3},
    check=_check_fuzzy,
    doc="MAD's fuzzy in-context recall: keys and values are motifs of several tokens; a repeated key asks its whole value",
)
def fuzzy_recall(spec: TaskSpec, batch: int, g: torch.Generator) -> Batch:
    """Key motifs of 1..k_motif_size tokens (lower half of the symbols) each followed by a value motif of
    1..v_motif_size tokens (upper half), one map per sequence. When a key motif comes again, every token of its
    value is scored, each at the position before it. The sequence closes by repeating a random earlier pair, so
    every row asks at least once; rows are left-padded with the pad token (vocab_size - 1) to seq_len.

    Drawn for every row at once, as if pair after pair: each candidate pair draws its motifs, a key seen before
    takes its first value, and the pairs are written while they fit (leaving room for the closing repeat)."""
    t, kmax, vmax = spec.seq_len, spec.k_motif_size, spec.v_motif_size
    pad = symbols = spec.vocab_size - 1
    n_keys, width, dev = symbols // 2, kmax + vmax, g.device
    slots = t // 2  # candidate pairs: each is 2 tokens at least, so no more fit
    rows = torch.arange(batch, device=dev)[:, None]
    k_len = torch.randint(1, kmax + 1, (batch, slots), generator=g, device=dev)
    v_len = torch.randint(1, vmax + 1, (batch, slots), generator=g, device=dev)
    keys = torch.randint(0, n_keys, (batch, slots, kmax), generator=g, device=dev)
    keys = torch.where(torch.arange(kmax, device=dev) < k_len[..., None], keys, -1)  # -1 past the motif's end
    values = torch.randint(n_keys, symbols, (batch, slots, vmax), generator=g, device=dev)
    first = _first_occurrence(keys)
    asked = first < torch.arange(slots, device=dev)
    values, v_len = values[rows, first], v_len[rows, first]  # a key seen before asks for its stored value
    written = (k_len + v_len).cumsum(1) <= t - width  # a prefix of the pairs, as a sequential walk writes them
    chosen = (torch.rand(batch, 1, generator=g, device=dev) * written.sum(1, keepdim=True)).long()  # the closing repeat
    k_len, keys, values, v_len = (torch.cat((a, a[rows, chosen]), 1) for a in (k_len, keys, values, v_len))
    asked = torch.cat((asked, torch.ones_like(asked[:, :1])), 1)
    written = torch.cat((written, torch.ones_like(written[:, :1])), 1)
    # each pair's tokens in `width` columns: key motif, then value motif, then unused columns
    j = torch.arange(width, device=dev)
    in_key = j < k_len[..., None]
    tokens = torch.cat((keys, values), 2).gather(2, torch.where(in_key, j, (kmax + j - k_len[..., None]).clamp(max=width - 1)))
    used = (j < (k_len + v_len)[..., None]) & written[..., None]
    following = torch.cat((tokens[..., 1:], tokens[..., :1]), 2)  # the answer at a position is the next token
    scored = asked[..., None] & (j >= k_len[..., None] - 1) & (j < (k_len + v_len)[..., None] - 1)
    answers = torch.where(scored, following, -1)
    used, tokens, answers = used.flatten(1), tokens.flatten(1), answers.flatten(1)
    # right-aligned in seq_len; unused columns land in a spare last column, then dropped
    at = torch.where(used, t - used.sum(1, keepdim=True) + used.cumsum(1) - 1, t)
    x = torch.full((batch, t + 1), pad, dtype=torch.long, device=dev).scatter_(1, at, tokens)
    y = torch.full((batch, t + 1), -1, dtype=torch.long, device=dev).scatter_(1, at, answers)
    return x[:, :t].contiguous(), y[:, :t].contiguous()


def _first_occurrence(motifs: torch.Tensor) -> torch.Tensor:
    """For motifs [B, P, K] (equal motifs: equal rows), the index of each one's first occurrence in its row [B, P]:
    a stable lexicographic sort, column by column from the last (no packing into one integer, which could overflow)."""
    batch, count, width = motifs.shape
    order = torch.arange(count, device=motifs.device).expand(batch, count)
    for col in reversed(range(width)):
        order = order.gather(1, motifs[..., col].gather(1, order).sort(dim=1, stable=True).indices)
    ranked = motifs.gather(1, order[..., None].expand(-1, -1, width))
    starts = torch.ones_like(order, dtype=torch.bool)
    starts[:, 1:] = (ranked[:, 1:] != ranked[:, :-1]).any(-1)
    leader = torch.where(starts, torch.arange(count, device=motifs.device), 0).cummax(1).values  # each group's first place
    return torch.empty_like(order).scatter_(1, order, order.gather(1, leader))  # equal motifs in first-seen order


def _check_induction(s: TaskSpec) -> None:
    require(s.vocab_size >= 3, "vocab_size", f"expected at least 3 (a trigger and two others), got {s.vocab_size}")
    require(s.seq_len >= 4, "seq_len", f"expected at least 4, got {s.seq_len}")


@register(
    "induction",
    defaults={"vocab_size": 64, "seq_len": 128},
    check=_check_induction,
    doc="a trigger token followed by a random token; the trigger again at the end: predict that token",
)
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
