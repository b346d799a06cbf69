"""FLASH's gated attention unit: the quadratic and mixed-chunk forms against a direct O(T^2) computation, decoding."""

import math

import pytest
import torch

from archsearch.architecture import BlockSpec
from archsearch.blocks.gau import QUAD_NORM, mixed_chunk_attention, quadratic_attention

D = 32


def direct(qq, kq, ql, kl, v, chunk):
    """The mixed-chunk function pair by pair: local squared-ReLU inside a chunk, linear over earlier chunks."""
    b, t, s = qq.shape
    out = torch.zeros(b, t, v.shape[-1], dtype=v.dtype)
    for i in range(t):
        for j in range(i + 1):
            if j // chunk == i // chunk:
                w = torch.relu((qq[:, i] * kq[:, j]).sum(-1) / math.sqrt(s)) ** 2
            else:
                w = (ql[:, i] * kl[:, j]).sum(-1)
            out[:, i] += w[:, None] * v[:, j] / chunk
    return out


def random_qkv(t, s=6, e=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, t, s, generator=g, dtype=torch.float64) for _ in range(4)] + [
        torch.randn(2, t, e, generator=g, dtype=torch.float64)
    ]


@pytest.mark.parametrize(("t", "chunk"), [(16, 4), (13, 4), (7, 3), (5, 8), (9, 1)])
def test_mixed_chunk_form_equals_the_direct_quadratic_computation(t, chunk):
    qq, kq, ql, kl, v = random_qkv(t)
    torch.testing.assert_close(mixed_chunk_attention(qq, kq, ql, kl, v, chunk), direct(qq, kq, ql, kl, v, chunk))


def test_quadratic_form_equals_the_direct_computation():
    q, k, _, _, v = random_qkv(9)
    # one chunk covering the sequence is the quadratic form, up to the normaliser
    want = direct(q, k, q, k, v, chunk=9) * 9 / QUAD_NORM
    torch.testing.assert_close(quadratic_attention(q, k, v, QUAD_NORM), want)


def test_the_linear_part_reads_only_previous_chunks():
    qq, kq, ql, kl, v = random_qkv(12)
    y = mixed_chunk_attention(qq, kq, ql, kl, v, 4)
    kl2 = kl.clone()
    kl2[:, 5] = 3.0  # a linear key of the second chunk, not its last token: only the third chunk reads it
    changed = (mixed_chunk_attention(qq, kq, ql, kl2, v, 4) - y).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [t >= 8 for t in range(12)]


@pytest.mark.parametrize(("chunk", "t"), [(0, 9), (5, 12), (4, 8), (3, 10)])
def test_decoding_equals_the_forward_and_the_chunk_cache_stays_within_a_chunk(chunk, t):
    torch.manual_seed(0)
    spec = BlockSpec.make("gau", {"qk_dim": 16, "chunk": chunk, "expansion": 1.5}, D)
    block = spec.fam.build(spec.p, D).eval()
    x = torch.randn(2, t, D)
    with torch.no_grad():
        y = block(x)
        state = block.init_state(2, x.device, x.dtype)
        for i in range(t):
            y_i, state = block.step(x[:, i], state)
            torch.testing.assert_close(y_i, y[:, i], atol=1e-5, rtol=1e-4)
            if chunk:
                assert state["z"].shape[1] == state["v"].shape[1] == (i + 1) % chunk
                assert state["kv"].shape == (2, 16, 48)


def test_odd_qk_dim_is_refused():
    spec = BlockSpec.make("gau", {"qk_dim": 9}, D)
    assert [key for key, _ in spec.fam.violations(spec.p, D)] == ["qk_dim"]
