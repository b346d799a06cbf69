"""The fused SwiGLU core (Triton, interpreted on CPU) equals silu(h1) * h3 on the packed h = [h1 | h3], forward and
backward."""

import pytest
import torch
import torch.nn.functional as F

from archsearch.kernels.moe.swiglu import swiglu

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("shape", [(3, 3, 2 * 1500), (5, 2 * 7)])  # rows not a multiple of the block; odd halves
def test_fused_swiglu_equals_silu_times_gate_forward_and_backward(shape):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(shape, generator=g, dtype=torch.float64)
    probe = torch.randn(*shape[:-1], shape[-1] // 2, generator=g, dtype=torch.float64)
    ref = h.clone().requires_grad_()
    h1, h3 = ref.chunk(2, dim=-1)
    y_ref = F.silu(h1) * h3
    (grad_ref,) = torch.autograd.grad(y_ref, ref, probe)
    leaf = h.to(DEVICE, torch.float32).requires_grad_()
    y = swiglu(leaf)
    (grad,) = torch.autograd.grad(y, leaf, probe.to(DEVICE, torch.float32))
    for got, want in ((y, y_ref), (grad, grad_ref)):
        torch.testing.assert_close(got.cpu().double(), want, atol=1e-5, rtol=1e-5)


def test_bfloat16_in_bfloat16_out():
    h = torch.randn(2, 200, device=DEVICE, dtype=torch.bfloat16)
    y = swiglu(h)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 100)
    torch.testing.assert_close(y.float(), F.silu(h[:, :100].float()) * h[:, 100:].float(), atol=1e-2, rtol=1e-2)


def test_odd_width_is_refused():
    with pytest.raises(ValueError, match="two halves"):
        swiglu(torch.randn(2, 5, device=DEVICE))
