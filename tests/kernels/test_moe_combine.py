"""The Triton ends of the MoE dispatch (interpreted on CPU): the gated combine and the gather's fixed-order backward."""

import torch

from archsearch.kernels.moe.combine import combine, gather

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def routing(n=40, k=2, experts=5, d=200, seed=0):
    """Sorted rows of n tokens' k slots (a share dropped), their outputs, gates and pos (slot -> row, -1 dropped)."""
    g = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(experts, generator=g)[:k] for _ in range(n)])
    index[torch.rand(n, k, generator=g) < 0.25] = -1
    flat = index.reshape(-1)
    order = torch.argsort(flat, stable=True)
    order = order[int((flat < 0).sum()) :]
    pos = torch.full((n * k,), -1, dtype=torch.int64).index_copy_(0, order, torch.arange(order.numel())).view(n, k)
    out = torch.randn(order.numel(), d, generator=g, dtype=torch.float64)
    gates = torch.rand(n, k, generator=g, dtype=torch.float64)
    return order, pos, out, gates


def test_combine_equals_the_gated_sum_over_kept_slots_forward_and_backward():
    order, pos, out, gates = routing()
    n, k = pos.shape
    probe = torch.randn(n, out.shape[1], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = [out.clone().requires_grad_(), gates.clone().requires_grad_()]
    rows = torch.cat([ref[0], torch.zeros(1, out.shape[1], dtype=torch.float64)])  # row -1: a dropped slot adds 0
    y_ref = (rows[pos] * ref[1][..., None]).sum(1)
    grads_ref = torch.autograd.grad(y_ref, ref, probe)
    leaves = [out.to(DEVICE, torch.float32).requires_grad_(), gates.to(DEVICE, torch.float32).requires_grad_()]
    y = combine(leaves[0], pos.to(DEVICE), leaves[1])
    grads = torch.autograd.grad(y, leaves, probe.to(DEVICE, torch.float32))
    for got, want in zip((y, *grads), (y_ref, *grads_ref), strict=True):
        torch.testing.assert_close(got.cpu().double(), want, atol=1e-5, rtol=1e-5)
    assert (grads[1].cpu()[pos < 0] == 0).all()


def test_gather_backward_sums_each_tokens_rows():
    order, pos, out, _ = routing(seed=2)
    n, k = pos.shape
    x = torch.randn(n, out.shape[1], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    probe = torch.randn(order.numel(), out.shape[1], generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x_ref = x.clone().requires_grad_()
    (dx_ref,) = torch.autograd.grad(x_ref[order // k], x_ref, probe)
    x_dev = x.to(DEVICE, torch.float32).requires_grad_()
    xs = gather(x_dev, (order // k).to(DEVICE), pos.to(DEVICE))
    torch.testing.assert_close(xs.cpu().double(), x[order // k], atol=1e-6, rtol=1e-6)
    (dx,) = torch.autograd.grad(xs, x_dev, probe.to(DEVICE, torch.float32))
    torch.testing.assert_close(dx.cpu().double(), dx_ref, atol=1e-5, rtol=1e-5)
