"""The fast long convolutions (fused Monarch-FFT kernel, cuFFT path) against the FFT reference (float32 arithmetic on
float64 inputs), forward and backward. On CPU the Triton kernels run in the interpreter (tests/conftest.py)."""

import pytest
import torch

from archsearch.kernels.long_conv.fft import long_conv_cufft
from archsearch.kernels.long_conv.monarch import MAX_FFT, fft_size, long_conv_monarch, supports
from archsearch.kernels.long_conv.reference import long_conv_fft

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# (leading batch shape, channels, tokens, filter taps): odd batches (a pair without its second sequence), odd T,
# filters longer and shorter than T, several leading dimensions, each transform size from 1024 to MAX_FFT
SHAPES = [
    ((3,), 2, 40, 40),
    ((2,), 3, 100, 60),
    ((1,), 2, 513, 513),
    ((4,), 1, 700, 1000),
    ((2, 3), 2, 33, 33),
    ((1,), 2, 1, 5),
    ((2,), 2, 2000, 2000),
    ((1,), 1, MAX_FFT // 2, MAX_FFT // 2),
]
IDS = [f"b{'x'.join(map(str, b))}-c{c}-t{t}-taps{k}" for b, c, t, k in SHAPES]
FORMS = {
    "monarch-f16": lambda u, h, s: long_conv_monarch(u, h, s, f16=True),
    "monarch-tf32": lambda u, h, s: long_conv_monarch(u, h, s, f16=False),
    "cufft-f32": lambda u, h, s: long_conv_cufft(u, h, s, half=False),
}
if torch.cuda.is_available():
    FORMS["cufft-f16"] = lambda u, h, s: long_conv_cufft(u, h, s, half=True)
TOL = 5e-3  # relative (norm) error: fp16 / tf32 DFT products land near 5e-4, fp32 transforms near 1e-7


def inputs(batch, c, t, taps, seed=0, u_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(*batch, c, t, generator=g, dtype=torch.float64) * u_scale
    decay = torch.exp(-torch.arange(taps, dtype=torch.float64) / max(taps / 4, 1))
    h = torch.randn(c, taps, generator=g, dtype=torch.float64) * decay
    return u, h, torch.randn(c, generator=g, dtype=torch.float64)


def relative(a, b):
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-300)).item()


def run(fn, u, h, skip, probe):
    """fn's output and gradients (u, h, then skip when given) in float32 on DEVICE, returned on the CPU."""
    leaves = [x.to(DEVICE, torch.float32).requires_grad_() for x in (u, h, skip) if x is not None]
    y = fn(leaves[0], leaves[1], leaves[2] if skip is not None else None)
    grads = torch.autograd.grad(y, leaves, probe.to(DEVICE, y.dtype))
    return y.cpu(), [g.cpu() for g in grads]


def reference(u, h, skip, probe):
    """The FFT reference on the CPU, on float64 inputs: output and gradients as `run` gives them."""
    leaves = [x.clone().requires_grad_() for x in (u, h, skip) if x is not None]
    y = long_conv_fft(leaves[0], leaves[1], leaves[2] if skip is not None else None)
    return y, list(torch.autograd.grad(y, leaves, probe))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("batch", "c", "t", "taps"), SHAPES, ids=IDS)
def test_fast_forms_equal_the_reference_forward_and_backward(form, batch, c, t, taps):
    u, h, skip = inputs(batch, c, t, taps)
    probe = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y_ref, grads_ref = reference(u, h, skip, probe)
    y, grads = run(FORMS[form], u, h, skip, probe)
    assert y.shape == u.shape and y.dtype == torch.float32
    assert relative(y, y_ref) < TOL
    for name, g, g_ref in zip(("u", "h", "skip"), grads, grads_ref, strict=True):
        assert g.shape == g_ref.shape, name
        assert relative(g, g_ref) < TOL, name
    if taps > t:  # taps beyond T are never reached
        assert grads[1][:, t:].abs().sum() == 0


@pytest.mark.parametrize("form", FORMS)
def test_without_skip_no_skip_gradient_is_asked(form):
    u, h, _ = inputs((3,), 2, 50, 50)
    probe = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y_ref, grads_ref = reference(u, h, None, probe)
    y, grads = run(FORMS[form], u, h, None, probe)
    assert relative(y, y_ref) < TOL
    assert all(relative(g, r) < TOL for g, r in zip(grads, grads_ref, strict=True))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("u_scale", "grad_scale"), [(1e4, 1.0), (1e-4, 1e-8)])
def test_the_range_of_inputs_and_gradients_is_kept(form, u_scale, grad_scale):
    """Each sequence and gradient is scaled to unit range before the fp16 products: big activations and tiny
    gradients keep their relative precision."""
    u, h, skip = inputs((3,), 2, 300, 300, u_scale=u_scale)
    probe = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * grad_scale
    y_ref, grads_ref = reference(u, h, skip, probe)
    y, grads = run(FORMS[form], u, h, skip, probe)
    assert relative(y, y_ref) < TOL
    assert all(relative(g, r) < TOL for g, r in zip(grads, grads_ref, strict=True))


@pytest.mark.parametrize("form", FORMS)
def test_half_precision_activations_keep_their_dtype(form):
    u, h, skip = inputs((2,), 3, 64, 64)
    probe = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    leaves = [u.to(DEVICE, torch.bfloat16).requires_grad_(), h.to(DEVICE).float().requires_grad_(), skip.to(DEVICE)]
    y = FORMS[form](*leaves)
    du, dh = torch.autograd.grad(y, leaves[:2], probe.to(DEVICE, torch.bfloat16))
    assert y.dtype == du.dtype == torch.bfloat16 and dh.dtype == torch.float32
    y_ref, _ = reference(leaves[0].detach().double().cpu(), h, skip, probe)
    assert relative(y.cpu(), y_ref) < 1e-2


def test_transform_sizes_are_powers_of_two_covering_twice_the_length():
    for t in (1, 100, 512, 513, 2048, 4096):
        n = fft_size(t)
        assert n & (n - 1) == 0 and n >= 2 * t
    assert supports(MAX_FFT // 2) and not supports(MAX_FFT // 2 + 1)
    with pytest.raises(ValueError):
        long_conv_monarch(torch.zeros(1, 1, MAX_FFT), torch.zeros(1, MAX_FFT))


@pytest.mark.parametrize("n", [2, 4, 16, 8192])
def test_packed_spectral_products_invert_as_the_complex_to_real_transform(n):
    """The cuFFT path's product kernels (with the per-sequence scales of its fp16 form, here in fp32) write each
    product packed as a half-length complex spectrum; its unscaled inverse equals irfft of the plain product."""
    from archsearch.kernels.long_conv import fft

    g = torch.Generator().manual_seed(n)
    b, c = 3, 2
    x, dy = torch.randn(b * c, n, generator=g), torch.randn(b * c, n, generator=g)
    spec_u, spec_dy, spec_h = (torch.fft.rfft(v) for v in (x, dy, torch.randn(c, n, generator=g)))
    h_scale, g_scale = torch.rand(c, generator=g) + 0.5, torch.rand(c, generator=g) + 0.5
    w = torch.rand(b * c, generator=g) + 0.5
    u_r, dy_r, h_r = (torch.view_as_real(v).contiguous() for v in (spec_u, spec_dy, spec_h))
    h_rows = (spec_h * h_scale[:, None]).repeat(b, 1) / n
    y = torch.empty(b * c, n // 2, 2)
    fft._spectral_product_kernel[fft._spectrum_grid(b * c, n)](
        u_r, h_r, h_scale, y, c, n // 2, 1.0 / n, HAS_SCALE=True, BLOCK=fft.BLOCK
    )
    assert relative(fft._inverse(y, n), torch.fft.irfft(spec_u * h_rows, n=n, norm="forward").double()) < 1e-5
    du, dh = torch.empty(b * c, n // 2, 2), torch.empty(c, n // 2, 2)
    fft._spectral_backward_kernel[fft._spectrum_grid(c, n)](
        dy_r, u_r, h_r, h_scale, w, g_scale, du, dh, b, c, n // 2, 1.0 / n, HAS_SCALE=True, BLOCK=fft.BLOCK
    )
    expect_du = torch.fft.irfft(spec_dy * h_rows.conj(), n=n, norm="forward")
    corr = (w[:, None] * spec_dy * spec_u.conj()).view(b, c, -1).sum(0) * g_scale[:, None]
    assert relative(fft._inverse(du, n), expect_du.double()) < 1e-5
    assert relative(fft._inverse(dh, n), torch.fft.irfft(corr, n=n, norm="forward").double()) < 1e-5


def test_a_compiled_monarch_convolution_builds_its_plan_in_the_graph_and_caches_none():
    """The op once cached its plan itself: under CUDA graphs the cached tensors came from the graph pool and failed
    the recording. Compiled, the plan is the graph's, the cache stays empty, and the results are the eager ones."""
    from archsearch.kernels.long_conv import monarch

    u, h, skip = inputs((2,), 2, 40, 40)
    probe = torch.randn(2, 2, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    monarch._cached_plan.cache_clear()
    torch._dynamo.reset()
    compiled = torch.compile(lambda u, h, s: long_conv_monarch(u, h, s, f16=False), backend="aot_eager", fullgraph=True)
    y, grads = run(compiled, u, h, skip, probe)
    assert monarch._cached_plan.cache_info().currsize == 0
    y_eager, grads_eager = run(lambda u, h, s: long_conv_monarch(u, h, s, f16=False), u, h, skip, probe)
    assert monarch._cached_plan.cache_info().currsize == 1  # eager calls share a cached plan
    assert torch.allclose(y, y_eager, atol=1e-6) and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, grads_eager, strict=True))
    y_ref, _ = reference(u, h, skip, probe)
    assert relative(y, y_ref) < TOL


@pytest.mark.parametrize("form", ["monarch-tf32", "cufft-f32"])
def test_a_transposed_activation_is_made_contiguous_in_the_traced_graph_not_in_the_op(form):
    """Blocks pass u as a transposed view of [B, T, C]. Compiled, the layout change is a graph node before the op
    (Inductor fuses it into u's producer), not an eager copy inside the op, which saves that contiguous u for its
    backward; the results are the reference's."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def keep(gm, _inputs):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    u, h, skip = inputs((2,), 3, 40, 40)
    probe = torch.randn(2, 40, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch._dynamo.reset()
    compiled = torch.compile(lambda u, h, s: FORMS[form](u.transpose(1, 2), h, s).transpose(1, 2),
                             backend=aot_autograd(fw_compiler=keep, bw_compiler=keep), fullgraph=True)
    y, grads = run(compiled, u.transpose(1, 2).contiguous(), h, skip, probe)
    forward, backward = ([n for n in g.graph.nodes if n.op == "call_function" and "long_conv" in str(n.target)] for g in graphs)
    assert len(forward) == len(backward) == 1
    assert forward[0].args[0].target == torch.ops.aten.clone.default  # u, made contiguous before the op
    y_ref, grads_ref = reference(u, h, skip, probe.transpose(1, 2))
    assert relative(y.transpose(1, 2), y_ref) < TOL
    assert relative(grads[0].transpose(1, 2), grads_ref[0]) < TOL and all(relative(g, r) < TOL for g, r in zip(grads[1:], grads_ref[1:], strict=True))
