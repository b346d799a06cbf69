"""The short causal depthwise convolution: the Triton kernel (interpreted on CPU) against the F.conv1d reference."""

import pytest
import torch

from archsearch.blocks._layers import ShortConv
from archsearch.kernels.short_conv import short_conv, short_conv_reference
from archsearch.kernels.short_conv.fused import MAX_K, short_conv_triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# (batch, tokens, channels, kernel size): tiles cut at T and C, a 1-tap filter, filters longer than T, MAX_K
SHAPES = [(2, 50, 130, 3), (1, 7, 5, 4), (3, 300, 64, 1), (2, 33, 20, MAX_K), (1, 3, 8, 6), (2, 600, 40, 2)]


def inputs(b, t, c, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, c, generator=g, dtype=torch.float64), torch.randn(c, k, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(("b", "t", "c", "k"), SHAPES)
def test_triton_kernel_equals_the_reference_forward_and_backward(b, t, c, k):
    x, w = inputs(b, t, c, k)
    probe = torch.randn(b, t, c, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = [v.clone().requires_grad_() for v in (x, w)]
    y_ref = short_conv_reference(*ref)
    grads_ref = torch.autograd.grad(y_ref, ref, probe)
    leaves = [v.to(DEVICE, torch.float32).requires_grad_() for v in (x, w)]
    y = short_conv_triton(*leaves)
    grads = torch.autograd.grad(y, leaves, probe.to(DEVICE, torch.float32))
    for got, want in zip((y, *grads), (y_ref, *grads_ref), strict=True):
        torch.testing.assert_close(got.cpu().double(), want, atol=1e-4, rtol=1e-4)


def test_the_backward_grid_splits_short_sequences_finer_and_every_split_is_exact(monkeypatch):
    from archsearch.kernels.short_conv import fused

    # the proxy's 16 x 256 on an H200 (132 multiprocessors): one or two tiles a program; long sequences keep eight
    assert fused.tiles_per_program(256, 256, 16, 132) == 1 and fused.tiles_per_program(256, 768, 16, 132) == 2
    assert fused.tiles_per_program(1024, 256, 16, 132) == 2 and fused.tiles_per_program(8192, 1536, 16, 132) == 8
    x, w = inputs(2, 300, 40, 3)
    probe = torch.randn(2, 300, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = [v.clone().requires_grad_() for v in (x, w)]
    want = torch.autograd.grad(short_conv_reference(*ref), ref, probe)
    for multiprocessors in (1, 4, 16):  # eight, two and one tiles a program at this shape
        monkeypatch.setattr(fused, "_multiprocessors", lambda device, n=multiprocessors: n)
        leaves = [v.to(DEVICE, torch.float32).requires_grad_() for v in (x, w)]
        got = torch.autograd.grad(short_conv_triton(*leaves), leaves, probe.to(DEVICE, torch.float32))
        for g, r in zip(got, want, strict=True):
            torch.testing.assert_close(g.cpu().double(), r, atol=1e-4, rtol=1e-4)


def test_the_last_tap_meets_the_current_token_and_nothing_later():
    x, w = inputs(1, 10, 3, 4)
    y = short_conv_triton(x.float(), w.float())
    x2 = x.clone()
    x2[:, 6] += 1.0
    changed = (short_conv_triton(x2.float(), w.float()) - y).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [t in (6, 7, 8, 9) for t in range(10)]
    torch.testing.assert_close(y[:, 0].double(), w[:, -1] * x[:, 0], atol=1e-6, rtol=1e-6)


def test_low_precision_activations_keep_their_dtype_and_weights_get_float32_gradients():
    x, w = inputs(2, 20, 8, 3)
    xb = x.to(DEVICE, torch.bfloat16).requires_grad_()
    wf = w.to(DEVICE, torch.float32).requires_grad_()
    y = short_conv_triton(xb, wf)
    dx, dw = torch.autograd.grad(y, (xb, wf), torch.ones_like(y))
    assert y.dtype == dx.dtype == torch.bfloat16 and dw.dtype == torch.float32
    torch.testing.assert_close(
        y.float().cpu(), short_conv_reference(xb.detach().float().cpu(), w.float()), atol=2e-2, rtol=2e-2
    )


def test_short_conv_module_uses_the_op_and_its_step_matches_forward():
    torch.manual_seed(0)
    conv = ShortConv(6, 3).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    torch.testing.assert_close(conv(x), short_conv(x, conv.weight))
    cache = conv.init_state(2, torch.device("cpu"), torch.float64)
    steps = []
    for t in range(9):
        y, cache = conv.step(x[:, t], cache)
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, dim=1), conv(x))
