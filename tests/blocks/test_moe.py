"""The moe family: routing (Switch top-1, renormalised top-k), capacity in position order, aux losses, shared experts."""

import math

import pytest
import torch

from archsearch.architecture import BlockSpec
from archsearch.blocks.glu import MLP
from archsearch.blocks.moe import MoE, drop_over_capacity, expert_counts
from archsearch.kernels.moe import mlp


def moe(d=8, experts=4, top_k=1, kind="swiglu", hidden=16, seed=0, **kw):
    torch.manual_seed(seed)
    return MoE(d, experts, top_k, kind, hidden, **kw)


def expert(block, e, x):
    return mlp(x, block.w1[e], block.w2[e], None if block.w3 is None else block.w3[e], block.kind)


def route_all_to(block, e, strength=100.0):
    """Router weights that send every token whose feature 0 is positive to expert e, with probability ~1."""
    with torch.no_grad():
        block.router.weight.zero_()
        block.router.weight[e, 0] = strength


def test_parameters_are_a_float32_router_and_stacked_experts():
    spec = BlockSpec.make("moe", {"experts": 4, "shared_experts": 1}, 32)
    block = spec.fam.build(spec.p, 32)
    shapes = {n: tuple(p.shape) for n, p in block.named_parameters()}
    assert shapes == {
        "router.weight": (4, 32),
        "w1": (4, 32, 128),
        "w3": (4, 32, 128),
        "w2": (4, 128, 32),
        "shared.w1": (32, 128),
        "shared.w3": (32, 128),
        "shared.w2": (128, 32),
    }
    assert block.router.weight.dtype == torch.float32
    assert "expert_fraction" in dict(block.named_buffers()) and "expert_fraction" not in block.state_dict()


def test_top1_scales_the_chosen_expert_by_its_probability_like_switch():
    block = moe(top_k=1, capacity_factor=1.0).eval()
    x = torch.randn(2, 5, 8)
    probs = (x @ block.router.weight.T).softmax(-1)
    p, e = probs.max(-1)
    want = torch.stack([torch.stack([p[b, t] * expert(block, e[b, t], x[b, t]) for t in range(5)]) for b in range(2)])
    torch.testing.assert_close(block(x), want)


def test_top2_renormalises_the_chosen_probabilities():
    block = moe(top_k=2, capacity_factor=0.0).train()
    x = torch.randn(3, 4, 8)
    probs = (x @ block.router.weight.T).softmax(-1)
    p, e = probs.topk(2, dim=-1)
    y = block(x)
    for b in range(3):
        for t in range(4):
            g = p[b, t] / p[b, t].sum()
            want = g[0] * expert(block, e[b, t, 0], x[b, t]) + g[1] * expert(block, e[b, t, 1], x[b, t])
            torch.testing.assert_close(y[b, t], want)


def test_a_single_expert_is_the_glu_mlp():
    block = moe(experts=1, kind="geglu").eval()
    dense = MLP(8, 16, "geglu")
    with torch.no_grad():
        for name in ("w1", "w2", "w3"):
            getattr(dense, name).copy_(getattr(block, name)[0])
    x = torch.randn(2, 6, 8)
    torch.testing.assert_close(block(x), dense(x))


def test_shared_experts_add_unweighted_as_a_sum_of_mlps():
    block = moe(shared_experts=2, kind="reglu").eval()
    with torch.no_grad():
        block.w2.zero_()  # silence the routed experts
    x = torch.randn(2, 3, 8)
    s = block.shared
    first, second = (slice(0, 16), slice(16, 32))
    want = sum(mlp(x, s.w1[:, h], s.w2[h], s.w3[:, h], "reglu") for h in (first, second))
    torch.testing.assert_close(block(x), want)


def test_expert_counts_equal_bincount_with_idle_experts():
    index = torch.randint(0, 5, (40, 2), generator=torch.Generator().manual_seed(0))  # experts 5, 6 stay idle
    assert torch.equal(expert_counts(index, 7), torch.bincount(index.reshape(-1), minlength=7))


def test_drop_over_capacity_grants_slots_in_row_major_order():
    index = torch.tensor([[0, 1], [0, 2], [0, 1], [1, 0]])
    kept = drop_over_capacity(index, capacity=2, experts=3)
    assert kept.tolist() == [[0, 1], [0, 2], [-1, 1], [-1, -1]]


def test_capacity_keeps_the_earliest_positions_and_drops_the_rest():
    block = moe(d=4, experts=4, top_k=1, capacity_factor=1.0).train()
    route_all_to(block, 0)
    x = torch.randn(2, 5, 4)
    x[..., 0] = x[..., 0].abs() + 0.5
    y = block(x)
    # 10 tokens, 4 experts: capacity ceil(10 / 4) = 3 slots, granted to token 0 of both sequences, then token 1 of the first
    kept = torch.zeros(2, 5, dtype=torch.bool)
    kept[0, 0] = kept[1, 0] = kept[0, 1] = True
    assert (y.abs().sum(-1) > 0).tolist() == kept.tolist()
    torch.testing.assert_close(y[kept], expert(block, 0, x[kept]), rtol=1e-4, atol=1e-6)  # probability ~1
    assert block.drop_rate.item() == pytest.approx(0.7)
    assert block.expert_fraction.tolist() == [1.0, 0.0, 0.0, 0.0]

    block.eval()  # no capacity limit outside training
    assert (block(x).abs().sum(-1) > 0).all()
    assert block.drop_rate.item() == 0.0


def test_capacity_factor_zero_drops_nothing_in_training():
    block = moe(capacity_factor=0.0).train()
    route_all_to(block, 2)
    x = torch.randn(2, 7, 8)
    x[..., 0] = x[..., 0].abs()
    assert (block(x).abs().sum(-1) > 0).all() and block.drop_rate.item() == 0.0


def test_top2_capacity_never_lets_a_later_position_change_an_earlier_output():
    block = moe(experts=4, top_k=2, capacity_factor=0.5, shared_experts=0).train()
    x = torch.randn(3, 12, 8)
    y = block(x)
    assert block.drop_rate.item() > 0.4
    for t in (1, 6, 11):
        x2 = x.clone()
        x2[:, t:] = torch.randn_like(x2[:, t:])
        torch.testing.assert_close(block(x2)[:, :t], y[:, :t], atol=0, rtol=0)


def test_aux_losses_are_finite_positive_and_reach_the_router():
    block = moe(aux_loss_weight=0.01, z_loss_weight=0.001, capacity_factor=1.25).train()
    block(torch.randn(2, 9, 8))
    aux = block.aux_loss
    assert aux.dtype == torch.float32 and aux.ndim == 0 and torch.isfinite(aux) and aux > 0
    aux.backward()
    assert block.router.weight.grad.abs().sum() > 0
    assert block.w1.grad is None  # the aux losses regularise the router alone


def test_load_balancing_loss_is_its_weight_for_uniform_routing():
    block = moe(aux_loss_weight=0.01, z_loss_weight=0.0)
    with torch.no_grad():
        block.router.weight.zero_()  # every probability 1 / experts
    block(torch.randn(2, 8, 8))
    torch.testing.assert_close(block.aux_loss, torch.tensor(0.01))


def test_load_balancing_loss_is_one_when_balanced_and_experts_when_collapsed():
    experts, weight = 4, 0.5
    x = torch.eye(experts).repeat(3, 1)[None]  # token n has feature n mod 4
    block = moe(d=experts, experts=experts, aux_loss_weight=weight, z_loss_weight=0.0).eval()
    with torch.no_grad():
        block.router.weight.copy_(50 * torch.eye(experts))  # token n -> expert n mod 4, probability ~1
    block(x)
    assert block.expert_fraction.tolist() == [0.25] * 4
    torch.testing.assert_close(block.aux_loss, torch.tensor(weight * 1.0), rtol=1e-4, atol=0)
    with torch.no_grad():
        block.router.weight.zero_()
        block.router.weight[0] = 50  # every token -> expert 0, probability ~1
    block(x)
    torch.testing.assert_close(block.aux_loss, torch.tensor(weight * experts), rtol=1e-4, atol=0)


def test_z_loss_is_the_mean_squared_logsumexp():
    block = moe(experts=4, aux_loss_weight=0.0, z_loss_weight=0.1)
    with torch.no_grad():
        block.router.weight.zero_()  # logits 0: logsumexp = log 4
    block(torch.randn(1, 5, 8))
    torch.testing.assert_close(block.aux_loss, torch.tensor(0.1 * math.log(4) ** 2))


def test_bfloat16_block_routes_in_float32():
    block = moe(top_k=2, capacity_factor=1.0).to(torch.bfloat16)
    y = block(torch.randn(2, 5, 8, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and block.aux_loss.dtype == torch.float32 and torch.isfinite(y).all()


@pytest.mark.parametrize("shared", [0, 2])
def test_residual_params_name_the_output_projections(shared):
    block = moe(shared_experts=shared)
    names = {block.get_parameter(n) is block.w2 or n for n in block.residual_params}
    assert names == ({True, "shared.w2"} if shared else {True})
    assert all(block.get_parameter(n).shape[-1] == 8 for n in block.residual_params)
