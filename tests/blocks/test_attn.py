"""Global and sliding-window attention blocks: the window's reach, grouped-query heads, the decode caches.

(Named after archsearch/blocks/attn.py: tests/kernels/test_attention.py holds the kernel's tests, and two test
files of one name in rootless test folders collide under pytest's default import mode.)
"""

import torch

from archsearch.architecture import BlockSpec
from archsearch.blocks.attn import Attention

D = 32


def build(name, seed=0, **params):
    torch.manual_seed(seed)
    spec = BlockSpec.make(name, params, D)
    return spec.fam.build(spec.p, D).eval()


def test_sliding_window_never_sees_past_the_window():
    block = build("swa", heads=4, window=4)
    x = torch.randn(2, 16, D)
    with torch.no_grad():
        y = block(x)
        x2 = x.clone()
        x2[:, 5] = torch.randn(2, D)
        changed = (block(x2) - y).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [t in (5, 6, 7, 8) for t in range(16)]


def test_a_window_as_long_as_the_sequence_is_global_attention():
    swa, attn = build("swa", heads=4, kv_heads=2, window=12), build("attn", heads=4, kv_heads=2)
    swa.load_state_dict(attn.state_dict())
    x = torch.randn(2, 12, D)
    with torch.no_grad():
        torch.testing.assert_close(swa(x), attn(x))


def test_grouped_query_heads_equal_repeated_kv_heads():
    grouped = build("attn", heads=4, kv_heads=2)
    full = Attention(D, heads=4, kv_heads=4, rope_base=10000.0)
    head_dim = D // 4
    with torch.no_grad():
        full.wq.weight.copy_(grouped.wq.weight)
        full.wo.weight.copy_(grouped.wo.weight)
        for name in ("wk", "wv"):  # kv head j serves query heads 2j and 2j + 1
            w = getattr(grouped, name).weight.view(2, head_dim, D)
            getattr(full, name).weight.copy_(w.repeat_interleave(2, dim=0).reshape(D, D))
        x = torch.randn(2, 11, D)
        torch.testing.assert_close(grouped(x), full.eval()(x))


def test_the_window_cache_never_grows_past_the_window_and_decoding_stays_exact():
    block = build("swa", heads=4, kv_heads=2, window=3)
    x = torch.randn(2, 10, D)
    with torch.no_grad():
        y = block(x)
        state = block.init_state(2, x.device, x.dtype)
        for t in range(10):
            y_t, state = block.step(x[:, t], state)
            assert state["k"].shape[1] == state["v"].shape[1] == min(t + 1, 3)
            torch.testing.assert_close(y_t, y[:, t], atol=1e-5, rtol=1e-5)
    assert state["pos"] == 10


def test_the_global_cache_keeps_every_token():
    block = build("attn", heads=4)
    state = block.init_state(1, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        for _ in range(6):
            _, state = block.step(torch.randn(1, D), state)
    assert state["k"].shape == (1, 6, 4, D // 4)
