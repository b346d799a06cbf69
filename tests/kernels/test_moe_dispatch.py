"""The sorted, grouped mixture-of-experts dispatch equals the per-expert loop that defines it, forward and backward."""

import pytest
import torch

from archsearch.kernels.moe import mlp, moe_mlp, moe_mlp_reference

KINDS = ["swiglu", "geglu", "reglu", "mlp"]
TOL = {torch.float64: {"atol": 1e-10, "rtol": 1e-10}, torch.float32: {"atol": 1e-5, "rtol": 1e-5}}


def uneven_routing(n, k, experts, drop=0.2, seed=0):
    """expert_index [n, k] with distinct experts per token, loads skewed towards low experts, the last expert empty,
    and a share of slots dropped (-1)."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.tensor([2.0**-e for e in range(experts - 1)] + [0.0])
    index = torch.multinomial(weights.expand(n, -1), k, replacement=False, generator=g)
    dropped = torch.rand(n, k, generator=g) < drop
    return torch.where(dropped, -1, index)


def inputs(n, d, hidden, experts, k, kind, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_()

    x = rand(n, d)
    gates = (torch.rand(n, k, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
    w1 = rand(experts, d, hidden, scale=d**-0.5)
    w3 = rand(experts, d, hidden, scale=d**-0.5) if kind != "mlp" else None
    w2 = rand(experts, hidden, d, scale=hidden**-0.5)
    return x, uneven_routing(n, k, experts, seed=seed), gates, w1, w2, w3


def grads(out, tensors, seed=1):
    g = torch.Generator().manual_seed(seed)
    probe = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device, out.dtype)
    return torch.autograd.grad((out * probe).sum(), [t for t in tensors if t is not None])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("n", "d", "hidden", "experts", "k"), [(37, 8, 16, 5, 1), (64, 16, 24, 6, 2), (9, 4, 8, 4, 3)])
def test_sorted_dispatch_equals_expert_loop(n, d, hidden, experts, k, kind, dtype):
    x, index, gates, w1, w2, w3 = inputs(n, d, hidden, experts, k, kind, dtype)
    assert (index == experts - 1).sum() == 0 and (index < 0).any()  # an idle expert and dropped slots are covered
    y = moe_mlp(x, index, gates, w1, w2, w3, kind)
    y_ref = moe_mlp_reference(x, index, gates, w1, w2, w3, kind)
    assert y.dtype == dtype
    torch.testing.assert_close(y, y_ref, **TOL[dtype])
    for g, g_ref in zip(grads(y, (x, gates, w1, w2, w3)), grads(y_ref, (x, gates, w1, w2, w3)), strict=True):
        torch.testing.assert_close(g, g_ref, **TOL[dtype])


def test_reference_is_the_gated_sum_of_expert_mlps():
    x, index, gates, w1, w2, w3 = inputs(11, 4, 8, 3, 2, "swiglu", torch.float64)
    y = moe_mlp_reference(x, index, gates, w1, w2, w3, "swiglu")
    for n in range(11):
        want = sum(
            gates[n, j] * mlp(x[n], w1[e], w2[e], w3[e], "swiglu") for j, e in enumerate(index[n].tolist()) if e >= 0
        )
        torch.testing.assert_close(y[n], want + torch.zeros_like(y[n]))


def test_every_slot_dropped_gives_zeros_and_zero_weight_gradients():
    x, index, gates, w1, w2, w3 = inputs(6, 4, 8, 3, 1, "reglu", torch.float32)
    y = moe_mlp(x, torch.full_like(index, -1), gates, w1, w2, w3, "reglu")
    assert torch.equal(y, torch.zeros_like(y))
    for g in grads(y, (x, gates, w1, w2, w3)):
        assert torch.equal(g, torch.zeros_like(g))


def test_dropped_slots_and_idle_experts_get_no_gradient():
    x, index, gates, w1, w2, w3 = inputs(20, 4, 8, 4, 2, "geglu", torch.float64)
    gx, ggates, gw1, *_ = grads(moe_mlp(x, index, gates, w1, w2, w3, "geglu"), (x, gates, w1, w2, w3))
    assert torch.equal(ggates[index < 0], torch.zeros_like(ggates[index < 0]))
    assert torch.equal(gw1[3], torch.zeros_like(gw1[3]))  # the last expert has no tokens
    fully_dropped = (index < 0).all(1)
    assert torch.equal(gx[fully_dropped], torch.zeros_like(gx[fully_dropped]))



def test_autocast_runs_the_experts_in_its_dtype():
    """Under autocast (float32 parameters, bf16 compute, as the proxy trains) the experts run in bf16 like F.linear,
    so on CUDA the grouped GEMM takes them; the output is close to the float32 loop."""
    x, index, gates, w1, w2, w3 = inputs(64, 16, 32, 4, 2, "swiglu", torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = moe_mlp(x, index, gates, w1, w2, w3, "swiglu")
        dense = mlp(x, w1[0], w2[0], w3[0], "swiglu")
    assert y.dtype == dense.dtype == torch.bfloat16
    y_ref = moe_mlp_reference(x, index, gates, w1, w2, w3, "swiglu")
    assert ((y.float() - y_ref).norm() / y_ref.norm()).item() < 2e-2
    grads(y.float(), (x, gates, w1, w2, w3))  # differentiable back to the float32 leaves
