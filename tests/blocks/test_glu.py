"""The glu family: each kind computes its formula, widths follow the cost model, decoding is the same MLP per token."""

import math

import pytest
import torch

from archsearch.architecture import BlockSpec
from archsearch.blocks.glu import MLP


def silu(z):
    return z / (1 + math.exp(-z))


def gelu_tanh(z):
    return 0.5 * z * (1 + math.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))


def relu(z):
    return max(z, 0.0)


# x = (1, -2) through two hidden units, one with a positive and one with a negative pre-activation:
# w1 columns (1.5, 0.25) and (-1, 0.5), w3 columns (2, 0.25) and (0.5, -1), then w2 rows (1, -1) and (3, 2).
X = [1.0, -2.0]
W1 = [[1.5, -1.0], [0.25, 0.5]]
W3 = [[2.0, 0.5], [0.25, -1.0]]
W2 = [[1.0, -1.0], [3.0, 2.0]]
H1 = [1.5 * 1 + 0.25 * -2, -1.0 * 1 + 0.5 * -2]  # (1, -2)
H3 = [2.0 * 1 + 0.25 * -2, 0.5 * 1 + -1.0 * -2]  # (1.5, 2.5)
HAND = {
    "swiglu": [silu(H1[0]) * H3[0], silu(H1[1]) * H3[1]],
    "geglu": [gelu_tanh(H1[0]) * H3[0], gelu_tanh(H1[1]) * H3[1]],
    "reglu": [relu(H1[0]) * H3[0], relu(H1[1]) * H3[1]],
    "mlp": [gelu_tanh(H1[0]), gelu_tanh(H1[1])],
}


def hand_mlp(kind):
    module = MLP(2, 2, kind)
    with torch.no_grad():
        module.w1.copy_(torch.tensor(W1, dtype=torch.float64))
        module.w2.copy_(torch.tensor(W2, dtype=torch.float64))
        if module.w3 is not None:
            module.w3.copy_(torch.tensor(W3, dtype=torch.float64))
    return module.double()


@pytest.mark.parametrize("kind", list(HAND))
def test_each_kind_computes_its_formula_by_hand(kind):
    a = HAND[kind]
    want = [a[0] * W2[0][0] + a[1] * W2[1][0], a[0] * W2[0][1] + a[1] * W2[1][1]]
    y = hand_mlp(kind)(torch.tensor([X], dtype=torch.float64))
    torch.testing.assert_close(y, torch.tensor([want], dtype=torch.float64), atol=1e-12, rtol=1e-12)


def test_geglu_uses_the_tanh_approximation_of_gelu():
    x = torch.tensor([[[1.3, -0.7]]], dtype=torch.float64)
    module = hand_mlp("geglu")
    h1, h3 = x @ module.w1, x @ module.w3
    tanh_form = (torch.nn.functional.gelu(h1, approximate="tanh") * h3) @ module.w2
    erf_form = (torch.nn.functional.gelu(h1) * h3) @ module.w2
    torch.testing.assert_close(module(x), tanh_form, atol=1e-12, rtol=1e-12)
    assert not torch.allclose(module(x), erf_form, atol=1e-12, rtol=0)


@pytest.mark.parametrize(("kind", "hidden", "names"), [("swiglu", 128, {"w1", "w2", "w3"}), ("mlp", 128, {"w1", "w2"})])
def test_hidden_width_and_parameters_follow_the_family(kind, hidden, names):
    spec = BlockSpec.make("glu", {"kind": kind}, 32)  # 8/3 * 32 and 4 * 32 both round up to 128
    module = spec.fam.build(spec.p, 32)
    assert {n for n, _ in module.named_parameters()} == names
    assert module.w1.shape == (32, hidden) and module.w2.shape == (hidden, 32)
    assert spec.fam.hidden(spec.p, 32) == hidden


def test_init_is_normal_with_std_002():
    torch.manual_seed(0)
    module = MLP(256, 512, "swiglu")
    for p in module.parameters():
        assert abs(p.std().item() - 0.02) < 1e-3 and abs(p.mean().item()) < 1e-3


def test_decoding_is_stateless_and_applies_the_mlp_to_the_token():
    torch.manual_seed(0)
    module = MLP(8, 16, "reglu")
    x = torch.randn(3, 8)
    assert module.init_state(3, x.device, x.dtype) is None
    y, state = module.step(x, None)
    assert state is None
    torch.testing.assert_close(y, module(x[:, None])[:, 0])


def test_the_output_projection_is_the_residual_parameter():
    module = MLP(8, 16, "swiglu")
    assert [module.get_parameter(n) for n in module.residual_params] == [module.w2]
