"""The Triton delta-rule kernels equal the PyTorch reference: outputs, final state and every gradient.

Without CUDA these run on the CPU under Triton's interpreter (tests/conftest.py turns it on before any import), so
shapes are tiny. In float32 the interpreter's dots are exact float32 products, so kernel and reference differ by
rounding alone: ATOL = RTOL = 1e-4. float16 inputs round q, k, v and every stored intermediate (W, U, the chunk
states) to 11 significant bits: 2e-3 relative error in the norm. (bfloat16 is checked on the GPU by
benchmarks/delta_rule.py: the interpreter's bfloat16 dot is not implemented correctly.)
"""

import pytest
import torch
import torch.nn.functional as F

from archsearch.kernels.delta_rule import chunk as chunk_module
from archsearch.kernels.delta_rule.chunk import chunk_delta_rule_triton
from archsearch.kernels.delta_rule.fused_recurrent import delta_rule_step_triton, fused_recurrent_delta_rule_triton
from archsearch.kernels.delta_rule.reference import delta_rule_step, recurrent_delta_rule

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ATOL = RTOL = 1e-4
FP16_REL = 2e-3
# (batch, tokens, heads, key dim, value dim, chunk): ragged last chunks, K != V, T below one chunk, several
# 16-row blocks merged in one chunk (32, 64), head dims that are not powers of two
SHAPES = [
    (1, 40, 2, 16, 16, 16),
    (2, 37, 1, 16, 32, 32),
    (1, 70, 1, 16, 16, 64),
    (1, 21, 2, 20, 24, 16),
    (1, 21, 1, 80, 24, 16),  # K > 64: the backward takes K in blocks
]


def inputs(b, t, h, dk, dv, seed=0, dtype=torch.float32):
    """Random inputs as DeltaNet feeds them: unit keys, beta in (0, 1), a random initial state; never zero."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, h, dk, generator=g)
    k = F.normalize(torch.randn(b, t, h, dk, generator=g), dim=-1)
    v = torch.randn(b, t, h, dv, generator=g)
    beta = torch.rand(b, t, h, generator=g) * 0.98 + 0.01
    s0 = torch.randn(b, h, dk, dv, generator=g)
    return [x.to(DEVICE, dtype) for x in (q, k, v, beta)] + [s0.to(DEVICE)]


def run_with_grads(fn, q, k, v, beta, s0, **kw):
    """(o, final state, [dq, dk, dv, dbeta, ds0]) for a fixed random projection of o and the final state."""
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v, beta)]
    h0 = s0.detach().clone().requires_grad_() if s0 is not None else None
    o, s = fn(*leaves, initial_state=h0, output_final_state=True, **kw)
    g = torch.Generator().manual_seed(1)
    do = torch.randn(o.shape, generator=g).to(o.device)
    ds = torch.randn(s.shape, generator=g).to(s.device)
    ((o.float() * do).sum() + (s * ds).sum()).backward()
    return o, s, [x.grad for x in leaves] + ([h0.grad] if h0 is not None else [])


def reference(q, k, v, beta, **kw):
    """The token-by-token recurrence in float32 on the same (rounded) inputs."""
    return recurrent_delta_rule(*(x.float() for x in (q, k, v, beta)), **kw)


@pytest.fixture(params=[True, False], ids=["fused", "unfused"])
def variant(request, monkeypatch):
    """Both forms of each choice the launchers make: output and local dU' in the sequential loops or beside
    them, the inverse in register tiles or built in the buffer that keeps it."""
    monkeypatch.setattr(chunk_module, "FUSE_OUTPUT", request.param)
    monkeypatch.setattr(chunk_module, "FUSE_DV", request.param)
    monkeypatch.setattr(chunk_module, "REG_BLOCKS", request.param)


@pytest.mark.parametrize("initial_state", [True, False], ids=["h0", "no-h0"])
@pytest.mark.parametrize(("b", "t", "h", "dk", "dv", "chunk"), SHAPES)
def test_triton_chunk_equals_recurrence_forward_and_backward(b, t, h, dk, dv, chunk, initial_state, variant):
    q, k, v, beta, s0 = inputs(b, t, h, dk, dv)
    o, s, grads = assert_matches_reference(q, k, v, beta, s0 if initial_state else None, chunk)
    assert o.dtype == torch.float32 and s.dtype == torch.float32
    assert len(grads) == 4 + initial_state
    for name, g in zip(("q", "k", "v", "beta", "initial_state"), grads, strict=False):
        assert g.abs().sum() > 0, name


def assert_matches_reference(q, k, v, beta, s0, chunk):
    """The Triton chunk's output, final state and gradients, each checked against the recurrence's."""
    o, s, grads = run_with_grads(chunk_delta_rule_triton, q, k, v, beta, s0, chunk_size=chunk)
    o_ref, s_ref, grads_ref = run_with_grads(reference, q, k, v, beta, s0)
    torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=RTOL)
    assert len(grads) == len(grads_ref)
    for name, g, g_ref in zip(("q", "k", "v", "beta", "initial_state"), grads, grads_ref, strict=False):
        torch.testing.assert_close(g, g_ref, atol=ATOL, rtol=RTOL, msg=lambda m, name=name: f"d{name}: {m}")
    return o, s, grads


INVERSE_FORMS = {
    "register-tiles": {"REG_BLOCKS": True},
    "in-memory-register-substitution": {"REG_BLOCKS": False, "REG_SUBST": True},
    "in-memory-row-substitution": {"REG_BLOCKS": False, "REG_SUBST": False},
}


@pytest.mark.parametrize("form", INVERSE_FORMS)
def test_every_form_of_the_inverse_equals_recurrence_on_a_ragged_last_chunk(form, monkeypatch):
    """Four 16-row blocks merged per chunk of 64; the last chunk of 22 rows has one block full, one partly masked
    and two empty."""
    for name, value in INVERSE_FORMS[form].items():
        monkeypatch.setattr(chunk_module, name, value)
    q, k, v, beta, s0 = inputs(2, 150, 2, 20, 24, seed=8)
    assert_matches_reference(q, k, v, beta, s0, chunk=64)


def test_float16_inputs_stay_within_rounding_of_the_reference():
    q, k, v, beta, s0 = inputs(1, 40, 2, 16, 16, seed=3, dtype=torch.float16)
    o, s, grads = run_with_grads(chunk_delta_rule_triton, q, k, v, beta, s0, chunk_size=16)
    o_ref, s_ref, grads_ref = run_with_grads(reference, q, k, v, beta, s0)
    assert o.dtype == torch.float16 and s.dtype == torch.float32
    assert grads[0].dtype == torch.float16 and grads[4].dtype == torch.float32
    for name, x, ref in zip(
        ("o", "s", "dq", "dk", "dv", "dbeta", "ds0"), (o, s, *grads), (o_ref, s_ref, *grads_ref), strict=True
    ):
        err = ((x.float() - ref).norm() / ref.norm()).item()
        assert err < FP16_REL, f"{name}: relative error {err:.2e}"


def test_result_does_not_depend_on_the_chunk_size():
    q, k, v, beta, s0 = inputs(1, 45, 1, 16, 16, seed=4)
    o16, s16 = chunk_delta_rule_triton(q, k, v, beta, initial_state=s0, output_final_state=True, chunk_size=16)
    o32, s32 = chunk_delta_rule_triton(q, k, v, beta, initial_state=s0, output_final_state=True, chunk_size=32)
    torch.testing.assert_close(o16, o32, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s16, s32, atol=ATOL, rtol=RTOL)


def test_one_token_and_no_state_asked():
    q, k, v, beta, s0 = inputs(2, 1, 1, 16, 16, seed=5)
    o, s = chunk_delta_rule_triton(q, k, v, beta, initial_state=s0, chunk_size=16)
    o_ref, _ = reference(q, k, v, beta, initial_state=s0)
    assert s is None
    torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=RTOL)


def test_unsupported_chunk_size_is_refused():
    q, k, v, beta, _ = inputs(1, 8, 1, 16, 16)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_delta_rule_triton(q, k, v, beta, chunk_size=48)


@pytest.mark.parametrize(("dk", "dv"), [(16, 16), (20, 40)])
def test_fused_recurrent_kernel_equals_recurrence(dk, dv):
    q, k, v, beta, s0 = inputs(2, 13, 2, dk, dv, seed=6)
    o, s = fused_recurrent_delta_rule_triton(q, k, v, beta, initial_state=s0, output_final_state=True)
    o_ref, s_ref = recurrent_delta_rule(q, k, v, beta, initial_state=s0, output_final_state=True)
    torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=RTOL)


def test_decode_step_kernel_equals_reference_step():
    q, k, v, beta, s0 = inputs(3, 1, 2, 16, 24, seed=7)
    o, s = delta_rule_step_triton(q[:, 0], k[:, 0], v[:, 0], beta[:, 0], s0, scale=0.5)
    o_ref, s_ref = delta_rule_step(q[:, 0], k[:, 0], v[:, 0], beta[:, 0], s0, scale=0.5)
    torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=RTOL)


def test_head_dims_past_the_kernels_limit_go_to_the_reference():
    """Above 128 the GPU kernels failed (an illegal address at 192, wrong gradients at 256, on the H200): the
    dispatcher sends those head dims to the PyTorch chunked form."""
    limit = chunk_module.MAX_HEAD_DIM
    for head_dim, taken in ((64, True), (limit, True), (limit + 64, False), (256, False)):
        q = torch.randn(1, 8, 1, head_dim)
        assert chunk_module.supports(q, q, 64) is taken, head_dim
