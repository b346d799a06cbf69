"""The FlexAttention path of the attention dispatcher (CUDA's sliding-window path without flash-attn), run eagerly
on CPU tiny shapes: its block mask is the band the reference sees. FlexAttention has no CPU backward."""

import pytest
import torch

from archsearch.kernels.attention import _band_block_mask, _flex, attention_reference

# (batch, queries, keys, heads, kv_heads, head_dim, window): windows of 1, below and above a mask block, GQA,
# fewer queries than keys (a prefill continuing a cache)
SHAPES = [
    (2, 37, 37, 4, 2, 16, 5),
    (1, 200, 200, 2, 2, 32, 64),
    (1, 130, 130, 2, 1, 16, 1),
    (1, 150, 150, 2, 2, 16, 140),
    (1, 5, 20, 2, 2, 16, 4),
]


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize(("b", "tq", "tk", "h", "hkv", "d", "window"), SHAPES)
def test_flex_path_equals_the_reference(b, tq, tk, h, hkv, d, window):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, tq, h, d, generator=g)
    k, v = torch.randn(2, b, tk, hkv, d, generator=g)
    out = _flex(q, k, v, window, None, compiled=False)
    torch.testing.assert_close(out, attention_reference(q, k, v, window=window), atol=1e-5, rtol=1e-5)


def test_block_masks_are_cached_per_shape_and_window():
    a = _band_block_mask(64, 64, 8, torch.device("cpu"))
    assert _band_block_mask(64, 64, 8, torch.device("cpu")) is a
    assert _band_block_mask(64, 64, 9, torch.device("cpu")) is not a
