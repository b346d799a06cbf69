"""The fused SwiGLU core (Triton, interpreted on CPU) equals silu(a) * b, forward and backward."""

import torch
import torch.nn.functional as F

from archsearch.kernels.moe.swiglu import swiglu

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_fused_swiglu_equals_silu_times_gate_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    a, b, probe = torch.randn(3, 3, 1500, generator=g, dtype=torch.float64)  # not a multiple of the block
    ref = [a.clone().requires_grad_(), b.clone().requires_grad_()]
    y_ref = F.silu(ref[0]) * ref[1]
    grads_ref = torch.autograd.grad(y_ref, ref, probe)
    leaves = [a.to(DEVICE, torch.float32).requires_grad_(), b.to(DEVICE, torch.float32).requires_grad_()]
    y = swiglu(*leaves)
    grads = torch.autograd.grad(y, leaves, probe.to(DEVICE, torch.float32))
    for got, want in zip((y, *grads), (y_ref, *grads_ref), strict=True):
        torch.testing.assert_close(got.cpu().double(), want, atol=1e-5, rtol=1e-5)


def test_bfloat16_in_bfloat16_out():
    a, b = torch.randn(2, 100, device=DEVICE, dtype=torch.bfloat16)
    y = swiglu(a, b)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), F.silu(a.float()) * b.float(), atol=1e-2, rtol=1e-2)
