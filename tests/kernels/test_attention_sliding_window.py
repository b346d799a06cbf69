"""The Triton sliding-window attention (interpreted on CPU) equals the reference, forward and backward: windows
below, at and above a block, ragged lengths, grouped-query heads, fewer queries than keys, strided inputs."""

import pytest
import torch

from archsearch.kernels.attention import attention_reference
from archsearch.kernels.attention.sliding_window import sliding_window_attention

# float32 through the interpreter on CPU (exact products); bf16 on a GPU, where float32 products would be tf32
DEVICE, DTYPE = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)


def check(got, want):
    got = got.cpu().double()
    if DEVICE == "cpu":
        torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    else:  # bf16 rounding: relative error of the whole tensor (plus a floor: window 1 has dK = 0 exactly)
        assert (got - want).norm().item() <= 1e-2 * want.norm().item() + 1e-3


# (batch, queries, keys, heads, kv_heads, head_dim, window)
SHAPES = [
    (2, 37, 37, 2, 1, 16, 5),  # a window far below the block; GQA; one partial block
    (1, 150, 150, 2, 2, 32, 64),  # the window equals a block
    (1, 130, 130, 1, 1, 16, 1),  # each query sees only itself
    (1, 200, 200, 2, 2, 16, 140),  # the window spans blocks, ragged end
    (1, 70, 70, 2, 2, 16, 500),  # a window longer than the sequence: causal attention
    (1, 45, 110, 4, 2, 16, 30),  # fewer queries than keys (a prefill continuing a cache)
    (1, 140, 140, 2, 1, 128, 70),  # the block sizes of head_dim 128
    (1, 50, 50, 1, 1, 256, 33),  # and of head_dim 256
]


def _inputs(b, tq, tk, h, hkv, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, tq, h, d, generator=g, dtype=torch.float64)
    k, v = torch.randn(2, b, tk, hkv, d, generator=g, dtype=torch.float64)
    probe = torch.randn(b, tq, h, d, generator=g, dtype=torch.float64)
    return q, k, v, probe


@pytest.mark.parametrize(("b", "tq", "tk", "h", "hkv", "d", "window"), SHAPES)
def test_forward_and_gradients_equal_the_reference(b, tq, tk, h, hkv, d, window):
    q, k, v, probe = _inputs(b, tq, tk, h, hkv, d)
    ref = [x.clone().requires_grad_() for x in (q, k, v)]
    out_ref = attention_reference(*ref, window=window)
    grads_ref = torch.autograd.grad(out_ref, ref, probe)
    leaves = [x.to(DEVICE, DTYPE).requires_grad_() for x in (q, k, v)]
    out = sliding_window_attention(*leaves, window=window)
    grads = torch.autograd.grad(out, leaves, probe.to(DEVICE, DTYPE))
    for got, want in zip((out, *grads), (out_ref, *grads_ref), strict=True):
        check(got, want)


def test_strided_projections_and_scale():
    """q, k, v as views of one fused projection [B, T, 3, H, D] (the blocks' layout), with an explicit scale."""
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(2, 50, 3, 2, 16, generator=g, dtype=torch.float64)
    probe = torch.randn(2, 50, 2, 16, generator=g, dtype=torch.float64)
    ref = qkv.clone().requires_grad_()
    out_ref = attention_reference(*ref.unbind(2), window=9, scale=0.3)
    (grad_ref,) = torch.autograd.grad(out_ref, ref, probe)
    leaf = qkv.to(DEVICE, DTYPE).requires_grad_()
    out = sliding_window_attention(*leaf.unbind(2), window=9, scale=0.3)
    (grad,) = torch.autograd.grad(out, leaf, probe.to(DEVICE, DTYPE))
    check(out, out_ref)
    check(grad, grad_ref)
