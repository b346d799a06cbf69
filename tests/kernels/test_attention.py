"""The attention dispatcher against its reference: forward and every gradient, windows, GQA, decoding shapes."""

import pytest
import torch

from archsearch.kernels.attention import attention, attention_reference, visible

# (batch, queries, keys, heads, kv_heads, head_dim, window, causal)
SHAPES = [
    (2, 9, 9, 4, 4, 8, None, True),
    (2, 9, 9, 4, 2, 8, None, True),
    (1, 17, 17, 4, 1, 16, 5, True),
    (2, 12, 12, 2, 2, 8, 1, True),
    (2, 12, 12, 6, 3, 8, 30, True),
    (2, 4, 11, 4, 2, 8, None, True),
    (2, 4, 11, 4, 4, 8, 3, True),
    (2, 1, 7, 4, 2, 8, 3, True),
    (2, 1, 7, 4, 2, 8, None, True),
    (2, 5, 3, 4, 2, 8, None, False),
]
IDS = [f"b{b}-q{tq}-k{tk}-h{h}-kv{hkv}-d{d}-w{w}-{'causal' if c else 'cross'}" for b, tq, tk, h, hkv, d, w, c in SHAPES]


def inputs(b, tq, tk, h, hkv, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, tq, h, d, generator=g, dtype=dtype)
    k = torch.randn(b, tk, hkv, d, generator=g, dtype=dtype)
    v = torch.randn(b, tk, hkv, d, generator=g, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize(("b", "tq", "tk", "h", "hkv", "d", "window", "causal"), SHAPES, ids=IDS)
def test_sdpa_path_equals_the_reference_forward_and_backward(b, tq, tk, h, hkv, d, window, causal):
    q, k, v = inputs(b, tq, tk, h, hkv, d)
    grad_out = torch.randn(b, tq, h, d, dtype=torch.float64)
    results = []
    for fn in (attention, attention_reference):
        leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        out = fn(*leaves, window=window, causal=causal)
        out.backward(grad_out)
        results.append((out, *(x.grad for x in leaves)))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_query_heads_equal_repeated_kv_heads(dtype):
    q, k, v = inputs(2, 10, 10, 6, 2, 8, dtype=dtype)
    for window in (None, 4):
        grouped = attention(q, k, v, window=window)
        repeated = attention(q, k.repeat_interleave(3, dim=2), v.repeat_interleave(3, dim=2), window=window)
        torch.testing.assert_close(grouped, repeated)


def test_half_precision_follows_the_reference_within_its_precision():
    q, k, v = inputs(2, 16, 16, 4, 2, 16, dtype=torch.bfloat16)
    for window in (None, 6):
        want = attention_reference(q, k, v, window=window)
        torch.testing.assert_close(attention(q, k, v, window=window), want, atol=2e-2, rtol=2e-2)


def test_a_sliding_window_never_sees_past_the_window():
    q, k, v = inputs(1, 12, 12, 2, 2, 8)
    y = attention(q, k, v, window=3)
    k2, v2 = k.clone(), v.clone()
    k2[:, 4], v2[:, 4] = 10.0, 10.0
    y2 = attention(q, k2, v2, window=3)
    changed = (y2 - y).abs().amax(dim=(0, 2, 3)) > 0
    assert changed.tolist() == [t in (4, 5, 6) for t in range(12)]


def test_fewer_queries_than_keys_are_the_last_positions():
    q, k, v = inputs(2, 9, 9, 4, 2, 8)
    for window in (None, 4):
        full = attention(q, k, v, window=window)
        torch.testing.assert_close(attention(q[:, -3:], k, v, window=window), full[:, -3:])
        torch.testing.assert_close(
            attention(q[:, -1:], k[:, -4:], v[:, -4:], window=4), attention(q, k, v, window=4)[:, -1:]
        )


def test_visible_is_causal_and_banded():
    assert visible(3, 3, None).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert visible(2, 4, 2).tolist() == [[False, True, True, False], [False, False, True, True]]


def test_incompatible_heads_are_refused():
    q, k, v = inputs(1, 4, 4, 3, 2, 8)
    with pytest.raises(ValueError):
        attention(q, k, v)
