"""Synthetic tasks: each generator's answers are right by construction, seeded draws repeat, bad settings are refused."""

import pytest
import torch

from archsearch.errors import ArchsearchError
from archsearch.proxy.tasks import (
    TASKS,
    TaskError,
    TaskSpec,
    accuracy,
    compression,
    distinct,
    fuzzy_recall,
    in_context_recall,
    induction,
    kv_map,
    memorization,
    mqar,
    selective_copy,
)


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_mqar_follows_zoology_pairs_then_each_key_asked_once_at_an_even_offset():
    spec = TaskSpec("mqar", vocab_size=64, seq_len=48, num_kv_pairs=6, min_kv_pairs=6)
    x, y = mqar(spec, 16, g())
    for b in range(16):
        keys, values = x[b, 0:12:2].tolist(), x[b, 1:12:2].tolist()
        assert len(set(keys)) == 6 and all(1 <= k < 32 for k in keys) and all(32 <= v < 64 for v in values)
        assert len(set(values)) == 6  # Zoology draws values without replacement too
        pairs = dict(zip(keys, values, strict=True))
        asked = (y[b] != -1).nonzero().flatten()
        assert sorted(x[b, asked].tolist()) == sorted(keys) and all(pairs[x[b, p].item()] == y[b, p].item() for p in asked)
        assert ((asked - 12) % 2 == 0).all() and (asked >= 12).all()


@pytest.mark.parametrize("n, k", [(4095, 64), (160, 10), (40, 10), (10, 10)])  # the draw-and-drop path, then top-k's
def test_distinct_draws_each_row_without_replacement_uniformly(n, k):
    rows = torch.cat([distinct(500, n, k, g(seed)) for seed in range(8)])
    assert rows.shape == (4000, k) and rows.min() >= 0 and rows.max() < n
    assert all(len(set(r)) == k for r in rows.tolist())
    for values in (rows.flatten(), rows[:, 0]):  # every value equally likely, overall and in the first position
        counts = torch.bincount(values, minlength=n).float()
        expected = len(values) / n
        chi2, df = float(((counts - expected) ** 2 / expected).sum()), n - 1  # without replacement it runs low: fine
        assert abs(chi2 - df) < 6 * (2 * df) ** 0.5 + 5, (chi2, df)


def test_mqar_power_law_puts_queries_near_the_pairs_and_filler_is_random_or_blank():
    spec = TaskSpec("mqar", vocab_size=512, seq_len=512, num_kv_pairs=8)
    x, y = mqar(spec, 64, g())
    offsets = ((y != -1).nonzero()[:, 1] - 16) // 2
    assert offsets.float().median() < 30  # of 248 slots: power_a 0.01 favours short gaps
    uniform = TaskSpec("mqar", vocab_size=512, seq_len=512, num_kv_pairs=8, power_a=1.0)
    offsets = ((mqar(uniform, 64, g())[1] != -1).nonzero()[:, 1] - 16) // 2
    assert 80 < offsets.float().median() < 170
    filler = x[:, 16:][y[:, 16:] == -1]
    assert filler.unique().numel() > 100
    blank = mqar(TaskSpec("mqar", vocab_size=512, seq_len=512, num_kv_pairs=8, random_non_queries=False), 4, g())
    assert (blank[0][:, 16:][blank[1][:, 16:] == -1] == 0).all()


def test_mqar_defaults_are_zoology_and_fill_the_sequence_with_pairs():
    spec = TaskSpec("mqar")
    assert (spec.vocab_size, spec.seq_len, spec.num_kv_pairs, spec.power_a, spec.random_non_queries) == (8192, 256, 64, 0.01, True)
    assert spec.min_kv_pairs == 4 and TaskSpec("mqar", num_kv_pairs=3, seq_len=64).min_kv_pairs == 3
    assert TaskSpec("mqar", seq_len=128).num_kv_pairs == 32


def test_mqar_trains_on_zoologys_mixture_of_sizes_and_holds_out_the_largest():
    spec = TaskSpec("mqar", vocab_size=512, seq_len=128, num_kv_pairs=24, min_kv_pairs=5)
    x, y = mqar(spec, 400, g())
    for b in range(400):
        asked = (y[b] != -1).nonzero().flatten()
        n = len(asked)
        keys, values = x[b, 0 : 2 * n : 2].tolist(), x[b, 1 : 2 * n : 2].tolist()
        pairs = dict(zip(keys, values, strict=True))
        assert len(pairs) == n and all(pairs[x[b, p].item()] == y[b, p].item() for p in asked)  # every query's own pair
        assert ((asked - 2 * n) % 2 == 0).all() and (asked >= 2 * n).all()  # queries after this row's pairs
    sizes = (y != -1).sum(1)
    assert set(sizes.tolist()) == {24, 12, 6} and min((sizes == n).sum() for n in (24, 12, 6)) > 100  # halved down to 5, even mix
    held_out = TASKS["mqar"].held_out(spec)
    assert held_out.min_kv_pairs == 24 and ((mqar(held_out, 64, g())[1] != -1).sum(1) == 24).all()
    assert torch.equal(mqar(spec, 8, g(3))[0], mqar(spec, 8, g(3))[0])  # seeded draws repeat


def _recall_answers_are_right(x, y, key_count):
    """Replay each row: a key asks (at its position) the value it was first paired with, when seen before."""
    for b in range(x.shape[0]):
        seen = {}
        for i in range(0, x.shape[1], 2):
            k, v = x[b, i].item(), x[b, i + 1].item()
            if k >= key_count:  # noise pair
                assert y[b, i] == -1
                continue
            if k in seen:
                assert y[b, i] == v == seen[k]
            else:
                assert y[b, i] == -1
                seen[k] = v
        assert (y[b, 1::2] == -1).all() and (y[b] != -1).any()


def test_in_context_recall_asks_every_repeated_key_for_its_value():
    spec = TaskSpec("in_context_recall", vocab_size=16, seq_len=64)
    x, y = in_context_recall(spec, 8, g())
    _recall_answers_are_right(x, y, key_count=8)
    assert (x < 16).all() and (y[y != -1] >= 8).all()


def test_noisy_recall_replaces_a_share_of_pairs_by_noise_tokens():
    spec = TaskSpec("noisy_recall")
    assert (spec.vocab_size, spec.noise_vocab_size, spec.frac_noise, spec.seq_len) == (32, 16, 0.2, 128)
    x, y = TASKS["noisy_recall"](spec, 32, g())
    _recall_answers_are_right(x, y, key_count=8)
    noise_pairs = (x[:, 0::2] >= 16).float().mean().item()
    assert 0.15 < noise_pairs < 0.25 and ((x[:, 0::2] >= 16) == (x[:, 1::2] >= 16)).all()


@pytest.mark.parametrize(("vocab", "seq_len", "rows"), [(16, 64, 8), (8, 20, 200)])
def test_fuzzy_recall_asks_each_token_of_a_repeated_key_motifs_value(vocab, seq_len, rows):
    spec = TaskSpec("fuzzy_recall", vocab_size=vocab, seq_len=seq_len)
    x, y = fuzzy_recall(spec, rows, g())  # many short rows: repeated keys and full sequences are common
    pad, n_keys = vocab - 1, (vocab - 1) // 2
    for b in range(rows):
        row, ans = x[b].tolist(), y[b].tolist()
        start = next(i for i, t in enumerate(row) if t != pad)
        assert all(a == -1 for a in ans[:start])
        # split into (key motif, value motif) runs: keys are tokens below n_keys, values at or above
        pairs, i = [], start
        while i < len(row):
            j = i
            while row[j] < n_keys:
                j += 1
            k = j
            while k < len(row) and row[k] >= n_keys:
                k += 1
            pairs.append((i, tuple(row[i:j]), tuple(row[j:k])))
            i = k
        stored = {}
        for at, key, value in pairs:
            assert 1 <= len(key) <= 3 and 1 <= len(value) <= 3
            want = [-1] * (len(key) - 1) + (list(value) if key in stored else [-1] * len(value)) + [-1]
            assert ans[at : at + len(key) + len(value)] == want
            assert stored.setdefault(key, value) == value  # one map per sequence
        assert pairs[-1][1] in dict((k, v) for _, k, v in pairs[:-1])  # it closes by asking


def test_selective_copy_scores_the_scattered_tokens_in_order_after_the_marker():
    spec = TaskSpec("selective_copy", vocab_size=16, seq_len=30, num_tokens=4)
    x, y = selective_copy(spec, 4, g())
    for b in range(4):
        scattered = [t for t in x[b, :25].tolist() if t < 14]
        assert len(scattered) == 4 and x[b, 25] == 15 and (x[b, 26:] == 14).all()
        assert y[b, 26:].tolist() == scattered and (y[b, :26] == -1).all()


def test_compression_scores_the_tokens_in_order_at_the_markers():
    x, y = compression(TaskSpec("compression", vocab_size=8, seq_len=12), 4, g())
    assert (x[:, 6:] == 7).all() and (x[:, :6] < 7).all() and torch.equal(y[:, 6:], x[:, :6]) and (y[:, :6] == -1).all()


def test_memorization_asks_a_fixed_map_that_no_sequence_states():
    spec = TaskSpec("memorization", vocab_size=32, seq_len=16)
    table = kv_map(32, 12345)
    assert sorted(table.tolist()) == list(range(15, 30))  # a permutation of the values
    (x1, y1), (x2, y2) = memorization(spec, 4, g(0)), memorization(spec, 4, g(1))
    for x, y in ((x1, y1), (x2, y2)):
        assert (x[:, 1::2] == 31).all() and torch.equal(y[:, 1::2], table[x[:, 0::2]]) and (y[:, 0::2] == -1).all()
    assert not torch.equal(x1, x2) and not torch.equal(kv_map(32, 1), table)


def test_induction_asks_for_the_token_after_the_first_trigger():
    x, y = induction(TaskSpec("induction", vocab_size=16, seq_len=20), 6, g())
    for b in range(6):
        first = (x[b] == 15).nonzero().flatten()[0]
        assert y[b, -1] == x[b, first + 1] and (y[b, :-1] == -1).all()


def test_accuracy_counts_only_scored_positions():
    y = torch.tensor([[-1, 2, -1, 3]])
    logits = torch.zeros(1, 4, 5)
    logits[0, 1, 2] = logits[0, 3, 0] = 1
    assert accuracy(logits, y) == 0.5


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_repeats_for_a_seed_and_differs_across_seeds(name):
    spec = TaskSpec(name, seq_len=64)
    (xa, ya), (xb, yb), (xc, _) = TASKS[name](spec, 4, g(0)), TASKS[name](spec, 4, g(0)), TASKS[name](spec, 4, g(1))
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and not torch.equal(xa, xc)
    assert xa.shape == ya.shape == (4, 64) and xa.dtype == ya.dtype == torch.long
    assert (xa >= 0).all() and (xa < spec.vocab_size).all() and (ya >= -1).all() and (ya < spec.vocab_size).all()
    assert (ya != -1).any(dim=1).all()  # every row asks something, so no batch has an empty loss


@pytest.mark.parametrize(
    ("settings", "key", "says"),
    [
        ({"name": "mqar", "vocab_size": 64, "seq_len": 512, "num_kv_pairs": 32}, "num_kv_pairs", "distinct keys"),
        ({"name": "mqar", "vocab_size": 8192, "seq_len": 128, "num_kv_pairs": 50}, "num_kv_pairs", "seq_len >= 200"),
        ({"name": "mqar", "power_a": 0.0}, "power_a", "above 0"),
        ({"name": "mqar", "num_kv_pairs": 8, "min_kv_pairs": 9}, "min_kv_pairs", "at most num_kv_pairs"),
        ({"name": "mqar", "num_tokens": 4}, "num_tokens", "mqar has no such setting"),
        ({"name": "mqar", "num_kv_pairs": 0}, "num_kv_pairs", "positive integer"),
        ({"name": "mqar", "vocab_size": 10**12}, "vocab_size", "at most 2,097,152"),  # bounded, never an out-of-memory
        ({"name": "mqar", "seq_len": 10**9}, "seq_len", "at most 1,048,576"),
        ({"name": "mqar", "random_non_queries": 1}, "random_non_queries", "true or false"),
        ({"name": "noisy_recall", "frac_noise": 1.0}, "frac_noise", "[0, 1)"),
        ({"name": "noisy_recall", "noise_vocab_size": 31}, "noise_vocab_size", "at least 2"),
        ({"name": "in_context_recall", "seq_len": 33}, "seq_len", "even"),
        ({"name": "selective_copy", "seq_len": 20}, "num_tokens", "seq_len >= 33"),
        ({"name": "fuzzy_recall", "seq_len": 8}, "seq_len", "at least 12"),
        ({"name": "nope"}, "name", "unknown task 'nope'"),
        ({}, "name", "missing; expected one of"),
    ],
)
def test_bad_settings_name_their_key(settings, key, says):
    with pytest.raises(TaskError) as e:
        TaskSpec(**settings)
    assert e.value.key == f"proxy.synthetic.{key}" and says in e.value.message
    assert str(e.value).startswith(f"proxy.synthetic.{key}: ") and isinstance(e.value, ArchsearchError)


DELTANET = "{block: deltanet, heads: 2}"
ATTN = "{block: attn, heads: 2}"


def _two_layers(mixer: str):
    from archsearch import Architecture

    return Architecture.from_yaml(f"d_model: 32\nlayers:\n- {{mixer: {mixer}, channel: glu}}\n- {{mixer: {mixer}, channel: glu}}\n")


# a capable mixer at tiny sizes, the steps it needs, and an accuracy far above chance (chance in the comment)
LEARNABLE = {
    "in_context_recall": (DELTANET, {"vocab_size": 8, "seq_len": 32}, 60, 0.9),  # 4 values: 0.25
    "noisy_recall": (DELTANET, {"vocab_size": 12, "noise_vocab_size": 4, "seq_len": 32}, 200, 0.9),  # 0.25
    "fuzzy_recall": (DELTANET, {"vocab_size": 8, "seq_len": 32, "k_motif_size": 1, "v_motif_size": 2}, 150, 0.9),  # 0.25
    "selective_copy": (ATTN, {"vocab_size": 6, "seq_len": 16, "num_tokens": 3}, 300, 0.6),  # 4 tokens: 0.25
    "compression": (ATTN, {"vocab_size": 6, "seq_len": 12}, 100, 0.9),  # 5 tokens: 0.2
    "memorization": (ATTN, {"vocab_size": 32, "seq_len": 16}, 100, 0.9),  # 15 values: 0.07
}


@pytest.fixture
def one_thread():
    """Two threads on a shared two-core machine spin against each other: these tiny models train faster on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(LEARNABLE))
def test_a_capable_mixer_learns_each_mad_task_at_tiny_scale(name, one_thread):
    from archsearch.proxy import ProxySettings, run_proxy

    mixer, sizes, steps, floor = LEARNABLE[name]
    spec = TaskSpec(name, **sizes)
    settings = ProxySettings(task=name, synthetic=spec, batch_size=16, tokens=16 * spec.seq_len * steps, lr=1e-2, evals=1,
                             eval_tokens=16 * spec.seq_len * 8, timing_steps=1, device="cpu")
    m = run_proxy(_two_layers(mixer), settings)
    assert m.status == "ok" and m.accuracy >= floor, (name, m.accuracy)
