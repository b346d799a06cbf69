"""DeltaNet's own behaviour beyond the block contract: what reaches the delta rule, bounded outputs, decode state."""

import importlib

import pytest
import torch

from archsearch.architecture import BlockSpec
from archsearch.kernels.delta_rule import chunk_delta_rule

# the package exports the family under the module's name, so reach the module itself
module = importlib.import_module("archsearch.blocks.deltanet")

D = 32


def build(**params):
    torch.manual_seed(0)
    spec = BlockSpec.make("deltanet", params, D)
    return spec, spec.fam.build(spec.p, D)


def test_the_delta_rule_sees_unit_queries_and_keys_and_beta_between_zero_and_one(monkeypatch):
    seen = {}

    def spy(q, k, v, beta, **kw):
        seen.update(q=q, k=k, beta=beta)
        return chunk_delta_rule(q, k, v, beta, **kw)

    monkeypatch.setattr(module, "chunk_delta_rule", spy)
    _, block = build(heads=4)
    block(torch.randn(2, 11, D) * 50)
    assert seen["q"].shape == (2, 11, 4, D // 4)
    for name in ("q", "k"):
        torch.testing.assert_close(seen[name].norm(dim=-1), torch.ones(2, 11, 4), atol=1e-4, rtol=0)
    assert ((seen["beta"] > 0) & (seen["beta"] < 1)).all() and seen["beta"].shape == (2, 11, 4)


@pytest.mark.parametrize("scale", [1e-2, 1.0, 1e4])
def test_ungated_outputs_stay_bounded_whatever_the_input_scale(scale):
    # unit q and k keep the delta rule a contraction and the per-head RMSNorm fixes each head's norm to
    # sqrt(head_dim), so |y_t| <= |W_o|_2 * sqrt(d_model) * max|norm weight| for any input
    _, block = build(heads=4, gate=False)
    with torch.no_grad():
        y = block(torch.randn(2, 300, D) * scale)
        bound = torch.linalg.matrix_norm(block.o_proj.weight, ord=2) * D**0.5 * block.o_norm.weight.abs().max()
    assert torch.isfinite(y).all()
    assert (y.norm(dim=-1) <= bound * (1 + 1e-4)).all()


@pytest.mark.parametrize(("conv_size", "qv_conv", "caches"), [(4, True, 3), (1, True, 3), (0, True, 0), (4, False, 1)])
def test_decode_state_is_one_head_dim_square_per_head_and_the_conv_caches(conv_size, qv_conv, caches):
    spec, block = build(heads=4, conv_size=conv_size, qv_conv=qv_conv)
    state = block.init_state(5, torch.device("cpu"), torch.bfloat16)
    assert state.recurrent.shape == (5, 4, D // 4, D // 4) and state.recurrent.dtype == torch.float32
    kept = [c for c in state.conv if c is not None]
    assert len(kept) == caches and (not state.conv or state.conv[1] is not None)  # k's cache, whenever any
    assert all(c.shape == (5, D, conv_size - 1) and c.dtype == torch.bfloat16 for c in kept)
    elements = state.recurrent[0].numel() + sum(c[0].numel() for c in kept)
    assert elements > 0
    _, state = block.step(torch.randn(5, D), block.init_state(5, torch.device("cpu"), torch.float32))
    assert state.recurrent.abs().sum() > 0


def test_parameters_are_named_as_in_fla():
    def modules(block):
        return {name.split(".")[0] for name, _ in block.named_parameters()}

    bare = {"q_proj", "k_proj", "v_proj", "b_proj", "o_norm", "o_proj"}
    assert modules(build(heads=4)[1]) == bare | {"q_conv1d", "k_conv1d", "v_conv1d", "g_proj"}
    assert modules(build(heads=4, conv_size=0, gate=False)[1]) == bare
    assert modules(build(heads=4, qv_conv=False)[1]) == bare | {"k_conv1d", "g_proj"}


def test_without_qv_conv_q_and_v_are_the_current_tokens_alone(monkeypatch):
    # the key convolution mixes earlier tokens into k; q and v at t must not change when only earlier tokens do
    seen = []
    monkeypatch.setattr(module, "chunk_delta_rule", lambda q, k, v, beta, **kw: (seen.append((q, k, v)), chunk_delta_rule(q, k, v, beta, **kw))[1])
    _, block = build(heads=2, qv_conv=False)
    x = torch.randn(1, 6, D)
    y = x.clone()
    y[:, 3] = torch.randn(D)
    with torch.no_grad():
        block(x), block(y)
    (qx, kx, vx), (qy, ky, vy) = seen
    torch.testing.assert_close(qx[:, 4:], qy[:, 4:])
    torch.testing.assert_close(vx[:, 4:], vy[:, 4:])
    assert not torch.allclose(kx[:, 4], ky[:, 4])  # the key at 4 still sees the token at 3


def test_bfloat16_block_returns_bfloat16_close_to_float32():
    _, block = build(heads=2)
    x = torch.randn(2, 70, D)
    with torch.no_grad():
        y32 = block(x)
        y16 = block.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32, atol=2e-2, rtol=5e-2)
