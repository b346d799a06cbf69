"""Synthetic proxies: what each task asks and that it can be scored."""

import torch

from archsearch.proxy.tasks import TASKS, TaskSpec, accuracy, induction, mqar, selective_copy


def g():
    return torch.Generator().manual_seed(0)


def test_mqar_asks_each_key_once_and_answers_with_its_value():
    spec = TaskSpec("mqar", vocab_size=32, seq_len=40, num_kv_pairs=5)
    x, y = mqar(spec, 8, g())
    for b in range(8):
        pairs = dict(zip(x[b, 0:10:2].tolist(), x[b, 1:10:2].tolist(), strict=True))
        asked = (y[b] != -1).nonzero().flatten()
        assert len(asked) == 5 and sorted(x[b, asked].tolist()) == sorted(pairs)
        assert all(pairs[x[b, p].item()] == y[b, p].item() for p in asked)


def test_selective_copy_targets_the_scattered_tokens_in_order():
    spec = TaskSpec("selective_copy", vocab_size=16, seq_len=30, num_tokens=4)
    x, y = selective_copy(spec, 4, g())
    for b in range(4):
        scattered = [t for t in x[b, :26].tolist() if t >= 2]
        assert y[b][y[b] != -1].tolist() == scattered and (x[b, 26:] == 1).all()


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


def test_every_task_is_deterministic_for_a_generator():
    for name, task in TASKS.items():
        a, b = task(TaskSpec(name), 2, g()), task(TaskSpec(name), 2, g())
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
