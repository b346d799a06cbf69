"""Hyena specifics: implicit filters decay with their window and extend to any length; the block is safari's operator."""

import math

import pytest
import torch

from archsearch.architecture import BlockSpec
from archsearch.blocks.hyena import Hyena, HyenaFilter
from archsearch.kernels.long_conv import long_conv_direct

ATOL = RTOL = 1e-4


def hyena(d_model, **params):
    torch.manual_seed(0)
    spec = BlockSpec.make("hyena", params, d_model)
    return spec.fam.build(spec.p, d_model)


def test_filters_decay_with_the_exponential_window():
    torch.manual_seed(0)
    filt = HyenaFilter(channels=12, width=16, depth=2, pos_dim=5, reference_length=64)
    with torch.no_grad():
        h = filt(128)
        _, t = filt.encoding(128)
        window = filt.window(t).T  # [channels, length]
    assert torch.all(window[:, 1:] < window[:, :-1]) and torch.all(window[:, 0] == 1)
    # the FFN ends in sin, so a tap is at most the output row's L1 norm times the window
    bound = filt.out.weight.abs().sum(1, keepdim=True) * window
    assert torch.all(h.abs() <= bound + 1e-6)
    # the fastest channel is down to 1e-2 at t = 0.3, the slowest at t = 1.5
    fast_lag = math.ceil(0.3 * 63)
    assert torch.all(h[-1, fast_lag:].abs() <= 1.01e-2 * bound[-1, 0] / window[-1, 0])
    assert window[0, 63] > 1e-2 > window[-1, 63]


def test_filter_generalises_to_a_longer_sequence():
    torch.manual_seed(0)
    filt = HyenaFilter(channels=6, width=8, depth=3, pos_dim=3, reference_length=32)
    with torch.no_grad():
        torch.testing.assert_close(filt(20), filt(100)[:, :20])  # beyond the reference length too
    block = hyena(16, order=3, filter_width=8)
    x = torch.randn(2, 50, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(x[:, :20]), block(x)[:, :20], atol=1e-5, rtol=1e-5)


def test_encoding_below_the_reference_length_is_safaris():
    length, pos_dim = 40, 7
    filt = HyenaFilter(channels=4, width=8, depth=2, pos_dim=pos_dim, reference_length=length)
    z, t = filt.encoding(length)
    # safari's PositionalEmbedding(emb_dim=7, seq_len=40)
    t_ref = torch.linspace(0, 1, length)[:, None]
    w = 2 * math.pi * torch.linspace(0, length - 1, length)[:, None] / length
    f = torch.linspace(1e-4, (pos_dim - 1) // 2 - 1, (pos_dim - 1) // 2)[None]
    zc = torch.exp(-1j * f * w)
    torch.testing.assert_close(z, torch.cat((t_ref, zc.real, zc.imag), dim=-1))
    torch.testing.assert_close(t, t_ref)


def test_positional_encoding_and_window_are_not_trained():
    filt = HyenaFilter(channels=4, width=8, depth=3, pos_dim=5)
    names = {n for n, _ in filt.named_parameters()}
    assert names == {"linears.0.weight", "linears.0.bias", "linears.1.weight", "linears.1.bias",
                     "linears.2.weight", "linears.2.bias", "freq", "out.weight"}  # fmt: skip


def reference_hyena(block: Hyena, x):
    """Safari's HyenaOperator (one head, no dropout) written out with the direct convolution."""
    d, order, t = block.d_model, block.order, x.shape[1]
    u = block.short_conv(block.in_proj(x)).transpose(1, 2)
    *gates, v = u.split(d, dim=1)
    k = block.filter(t).T.reshape(t, d, order - 1).permute(2, 1, 0)  # safari: 'l (v o) -> o v l'
    bias = block.bias.reshape(d, order - 1).T  # safari: '(v o) -> o v'
    for o, x_i in enumerate(reversed(gates[1:])):
        v = v * x_i
        v = long_conv_direct(v, k[o], bias[o])
    return block.out_proj((v * gates[0]).transpose(1, 2))


@pytest.mark.parametrize("order", [2, 3, 5])
def test_block_is_safaris_hyena_operator(order):
    block = hyena(8, order=order, filter_width=8, short_conv=4)
    x = torch.randn(2, 23, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_hyena(block, x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("short_conv", [1, 3])
def test_decode_keeps_every_long_convolutions_inputs(short_conv):
    spec = BlockSpec.make("hyena", {"order": 3, "filter_width": 8, "short_conv": short_conv}, 8)
    block = spec.fam.build(spec.p, 8).eval()
    x = torch.randn(2, 9, 8)
    with torch.no_grad():
        state = block.init_state(2, x.device, x.dtype)
        steps = []
        for i in range(9):
            y, state = block.step(x[:, i], state)
            steps.append(y)
        torch.testing.assert_close(torch.stack(steps, 1), block(x), atol=ATOL, rtol=RTOL)
    cache, history = state  # per sequence (batch 2), one byte an element: the cost model's state bytes
    assert (cache.numel() + history.numel()) // 2 == spec.fam.state_bytes(spec.p, 8, context=9, dtype_bytes=1)


def test_residual_params_name_the_output_projection():
    block = hyena(8, order=2, filter_width=8)
    assert [block.get_parameter(n) for n in block.residual_params] == [block.out_proj.weight]
