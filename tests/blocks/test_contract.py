"""The contract every block family keeps: exact parameter count, causality, gradients everywhere, decode == forward."""

import pytest
import torch

from archsearch.architecture import BlockSpec
from archsearch.blocks import REGISTRY

D = 32
# small but non-trivial settings per family: several heads, windows and blocks shorter than the sequence
SMALL = {
    "attn": {"heads": 4, "kv_heads": 2},
    "swa": {"heads": 4, "window": 5},
    "deltanet": {"heads": 2},
    "h3": {"head_dim": 4, "state_size": 8},
    "hyena": {"order": 3, "filter_width": 16},
    "gau": {"qk_dim": 16},
    "brt": {"heads": 4, "states": 6, "block_size": 4},
    "glu": {"kind": "geglu"},
    "moe": {"experts": 4, "top_k": 2, "capacity_factor": 0.0},
}
VARIANTS = [(name, p) for name, p in SMALL.items()] + [
    ("deltanet", {"heads": 4, "conv_size": 0, "gate": False}),
    ("deltanet", {"heads": 2, "qv_conv": False}),
    ("h3", {"head_dim": 1, "state_size": 4}),
    ("gau", {"qk_dim": 16, "chunk": 4}),
    ("glu", {"kind": "mlp"}),
    ("glu", {"kind": "swiglu", "expansion": 2.0}),
    ("moe", {"experts": 4, "top_k": 1, "capacity_factor": 1.0, "shared_experts": 1}),
]
IDS = [f"{n}-{'-'.join(f'{k}{v}' for k, v in p.items())}" for n, p in VARIANTS]


def build(name, params, seed=0):
    torch.manual_seed(seed)
    spec = BlockSpec.make(name, dict(params), D)
    return spec, spec.fam.build(spec.p, D)


def test_every_family_is_covered():
    assert set(SMALL) == set(REGISTRY)


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=IDS)
def test_parameter_count_equals_cost_model(name, params):
    spec, block = build(name, params)
    assert sum(p.numel() for p in block.parameters()) == spec.fam.param_count(spec.p, D)


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=IDS)
def test_changing_a_token_never_changes_earlier_outputs(name, params):
    _, block = build(name, params)
    block.train()
    x = torch.randn(2, 19, D)
    y = block(x)
    for t in (0, 7, 18):
        x2 = x.clone()
        x2[:, t:] = torch.randn_like(x2[:, t:])
        torch.testing.assert_close(block(x2)[:, :t], y[:, :t], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(block(x2)[:, t], y[:, t])


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=IDS)
def test_gradients_reach_every_parameter(name, params):
    _, block = build(name, params)
    x = torch.randn(4, 16, D, requires_grad=True)
    loss = (block(x) * torch.randn(4, 16, D)).sum()
    if block.aux_loss is not None:
        loss = loss + block.aux_loss
    loss.backward()
    for pname, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=IDS)
def test_step_by_step_decode_equals_parallel_forward(name, params):
    _, block = build(name, params)
    block.eval()
    x = torch.randn(3, 13, D)
    with torch.no_grad():
        y = block(x)
        state = block.init_state(3, x.device, x.dtype)
        steps = []
        for t in range(x.shape[1]):
            y_t, state = block.step(x[:, t], state)
            steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, 1), y, atol=1e-4, rtol=1e-4)


def _state_bytes(state) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size() if state.is_floating_point() or state.is_complex() else 0
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(_state_bytes(v) for v in state)
    return 0


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=IDS)
def test_decode_state_bytes_equal_the_cost_model(name, params):
    spec, block = build(name, params)
    block = block.to(torch.bfloat16).eval()
    context = 11
    with torch.no_grad():
        state = block.init_state(2, torch.device("cpu"), torch.bfloat16)
        for _ in range(context):
            _, state = block.step(torch.randn(2, D, dtype=torch.bfloat16), state)
    assert _state_bytes(state) == 2 * spec.fam.state_bytes(spec.p, D, context, dtype_bytes=2)
