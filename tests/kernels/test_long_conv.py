"""The long convolution's forms agree: the FFT form and the decoding step equal the direct causal sum."""

import pytest
import torch

from archsearch.kernels.long_conv import long_conv, long_conv_direct, long_conv_step
from archsearch.kernels.long_conv.reference import long_conv_fft

ATOL = RTOL = 1e-4  # float32; the FFT's rounding grows slowly with T
# (leading batch shape, channels, tokens, filter length): odd and even T, one token, filters longer and shorter than T
SHAPES = [
    ((2,), 3, 16, 16),
    ((1,), 4, 17, 17),
    ((2,), 2, 1, 5),
    ((3,), 5, 33, 80),
    ((2,), 3, 40, 7),
    ((2, 3), 4, 25, 25),
]


def inputs(batch, c, t, taps, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*batch, c, t, generator=g), torch.randn(c, taps, generator=g), torch.randn(c, generator=g)


def run_with_grads(fn, u, h, skip):
    leaves = [x.clone().requires_grad_() for x in (u, h, skip)]
    y = fn(*leaves)
    (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    return y, [x.grad for x in leaves]


@pytest.mark.parametrize(("batch", "c", "t", "taps"), SHAPES)
def test_fft_form_equals_direct_sum_forward_and_backward(batch, c, t, taps):
    args = inputs(batch, c, t, taps)
    y_ref, grads_ref = run_with_grads(long_conv_direct, *args)
    for fn in (long_conv_fft, long_conv):
        y, grads = run_with_grads(fn, *args)
        torch.testing.assert_close(y, y_ref, atol=ATOL, rtol=RTOL)
        for name, g, g_ref in zip(("u", "h", "skip"), grads, grads_ref, strict=True):
            if name == "h" and taps > t:  # taps beyond T are never reached
                assert g[:, t:].abs().sum() == 0
                g, g_ref = g[:, :t], g_ref[:, :t]
            assert g.abs().sum() > 0, name
            torch.testing.assert_close(g, g_ref, atol=ATOL, rtol=RTOL, msg=lambda m, name=name: f"d{name}: {m}")


def test_direct_sum_is_the_definition():
    u, h, skip = inputs((2,), 3, 9, 6)
    y = long_conv_direct(u, h, skip)
    for t in range(9):
        expected = sum(h[:, s] * u[..., t - s] for s in range(min(t + 1, 6))) + skip * u[..., t]
        torch.testing.assert_close(y[..., t], expected)


@pytest.mark.parametrize(("batch", "c", "t", "taps"), SHAPES)
def test_step_at_each_position_equals_whole_sequence(batch, c, t, taps):
    u, h, skip = inputs(batch, c, t, taps)
    y = long_conv_direct(u, h, skip)
    steps = torch.stack([long_conv_step(u[..., : i + 1], h, skip) for i in range(t)], dim=-1)
    torch.testing.assert_close(steps, y, atol=ATOL, rtol=RTOL)


def test_without_skip_is_the_convolution_alone():
    u, h, skip = inputs((2,), 3, 12, 12)
    torch.testing.assert_close(long_conv(u, h, skip) - long_conv(u, h), skip[:, None] * u, atol=ATOL, rtol=RTOL)


def test_low_precision_inputs_compute_in_float32_and_keep_their_dtype():
    u, h, skip = inputs((2,), 3, 64, 64)
    y = long_conv(u.bfloat16(), h, skip)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), long_conv_direct(u.bfloat16().float(), h, skip), atol=0.05, rtol=0.02)
