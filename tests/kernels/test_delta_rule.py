"""The delta rule's forms agree: the chunkwise WY form equals the token-by-token recurrence, forward and backward."""

import pytest
import torch
import torch.nn.functional as F

from archsearch.kernels.delta_rule import chunk_delta_rule, delta_rule_step, fused_recurrent_delta_rule
from archsearch.kernels.delta_rule.reference import chunk_delta_rule_reference, recurrent_delta_rule

ATOL = RTOL = 1e-4  # float32, both forms computed in float32
# (batch, tokens, heads, key dim, value dim, chunk): exact multiples, ragged tails, one token, T below one chunk
SHAPES = [
    (1, 1, 1, 8, 8, 16),
    (2, 64, 2, 16, 16, 16),
    (2, 100, 3, 16, 24, 32),
    (1, 37, 2, 32, 32, 64),
    (3, 130, 1, 8, 4, 64),
]


def inputs(b, t, h, dk, dv, seed=0, initial_state=True):
    """Random inputs as DeltaNet feeds them: unit keys, beta in (0, 1); never zero."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, h, dk, generator=g)
    k = F.normalize(torch.randn(b, t, h, dk, generator=g), dim=-1)
    v = torch.randn(b, t, h, dv, generator=g)
    beta = torch.rand(b, t, h, generator=g) * 0.98 + 0.01
    s0 = torch.randn(b, h, dk, dv, generator=g) if initial_state else None
    return q, k, v, beta, s0


def run_with_grads(fn, q, k, v, beta, s0, **kw):
    leaves = [x.clone().requires_grad_() for x in (q, k, v, beta) + ((s0,) if s0 is not None else ())]
    o, s = fn(*leaves[:4], initial_state=leaves[4] if s0 is not None else None, output_final_state=True, **kw)
    g = torch.Generator().manual_seed(1)
    loss = (o * torch.randn(o.shape, generator=g)).sum() + (s * torch.randn(s.shape, generator=g)).sum()
    loss.backward()
    return o, s, [x.grad for x in leaves]


@pytest.mark.parametrize("initial_state", [True, False], ids=["h0", "no-h0"])
@pytest.mark.parametrize(("b", "t", "h", "dk", "dv", "chunk"), SHAPES)
def test_chunked_form_equals_recurrence_forward_and_backward(b, t, h, dk, dv, chunk, initial_state):
    args = inputs(b, t, h, dk, dv, initial_state=initial_state)
    o_ref, s_ref, grads_ref = run_with_grads(recurrent_delta_rule, *args)
    o, s, grads = run_with_grads(chunk_delta_rule_reference, *args, chunk_size=chunk)
    torch.testing.assert_close(o, o_ref, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s, s_ref, atol=ATOL, rtol=RTOL)
    for name, g, g_ref in zip(("q", "k", "v", "beta", "initial_state"), grads, grads_ref, strict=False):
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(g, g_ref, atol=ATOL, rtol=RTOL, msg=lambda m, name=name: f"d{name}: {m}")


def test_recurrence_is_the_papers_delta_rule_in_transposed_orientation():
    # the paper's S is [V, K]: S_t = S_{t-1} (I - beta k k^T) + beta v k^T, o_t = S_t q_t; ours stores S^T
    q, k, v, beta, s0 = inputs(2, 9, 2, 8, 6)
    scale = 0.3
    o, s = recurrent_delta_rule(q, k, v, beta, scale=scale, initial_state=s0, output_final_state=True)
    paper = s0.transpose(-1, -2)
    eye = torch.eye(8)
    for t in range(9):
        kt, bt = k[:, t], beta[:, t, :, None, None]
        paper = paper @ (eye - bt * kt[..., :, None] * kt[..., None, :]) + bt * v[:, t, ..., :, None] * kt[..., None, :]
        torch.testing.assert_close(o[:, t], (paper @ (scale * q[:, t, ..., None]))[..., 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, paper.transpose(-1, -2), atol=1e-5, rtol=1e-5)


def test_a_full_strength_write_is_read_back_exactly():
    q, k, v, beta, s0 = inputs(2, 1, 3, 16, 8)
    o, _ = recurrent_delta_rule(k, k, v, torch.ones_like(beta), scale=1.0, initial_state=s0)
    torch.testing.assert_close(o, v, atol=1e-5, rtol=1e-5)


def test_zero_beta_tokens_leave_the_state_untouched():
    q, k, v, beta, s0 = inputs(1, 20, 2, 8, 8)
    _, s = chunk_delta_rule_reference(q, k, v, torch.zeros_like(beta), initial_state=s0, output_final_state=True)
    torch.testing.assert_close(s, s0)


def test_normalised_keys_keep_the_state_within_what_was_written():
    # I - beta k k^T is a contraction for unit k and beta in [0, 1], so |S_T| <= |S_0| + sum beta_t |v_t|
    q, k, v, beta, s0 = inputs(1, 400, 2, 16, 16)
    _, s = chunk_delta_rule_reference(q, k, v, beta, initial_state=s0, output_final_state=True)
    bound = torch.linalg.matrix_norm(s0, ord=2) + (beta * v.norm(dim=-1)).sum(1)
    assert (torch.linalg.matrix_norm(s, ord=2) <= bound + 1e-3).all()


def test_result_does_not_depend_on_the_chunk_size():
    args = inputs(2, 77, 2, 16, 16)
    o16, s16 = chunk_delta_rule_reference(*args[:4], initial_state=args[4], output_final_state=True, chunk_size=16)
    o64, s64 = chunk_delta_rule_reference(*args[:4], initial_state=args[4], output_final_state=True, chunk_size=64)
    torch.testing.assert_close(o16, o64, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s16, s64, atol=ATOL, rtol=RTOL)


def test_a_sequence_split_in_two_continues_from_the_carried_state():
    q, k, v, beta, s0 = inputs(2, 50, 2, 16, 16)
    o, s = chunk_delta_rule(q, k, v, beta, initial_state=s0, output_final_state=True, chunk_size=16)
    first, rest = zip(*((x[:, :21], x[:, 21:]) for x in (q, k, v, beta)), strict=True)
    o1, s1 = chunk_delta_rule(*first, initial_state=s0, output_final_state=True)
    o2, s2 = fused_recurrent_delta_rule(*rest, initial_state=s1, output_final_state=True)
    torch.testing.assert_close(torch.cat((o1, o2), 1), o, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(s2, s, atol=ATOL, rtol=RTOL)


def test_single_steps_equal_the_sequence():
    q, k, v, beta, s0 = inputs(2, 12, 2, 8, 8)
    o, s = chunk_delta_rule(q, k, v, beta, initial_state=s0, output_final_state=True)
    state, steps = s0, []
    for t in range(12):
        o_t, state = delta_rule_step(q[:, t], k[:, t], v[:, t], beta[:, t], state)
        steps.append(o_t)
    torch.testing.assert_close(torch.stack(steps, 1), o, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(state, s, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_outputs_come_back_in_the_input_dtype_and_states_in_float32(dtype):
    q, k, v, beta, _ = (x.to(dtype) if x is not None else None for x in inputs(1, 40, 2, 16, 16))
    o, s = chunk_delta_rule(q, k, v, beta, output_final_state=True, chunk_size=16)
    o_ref, s_ref = recurrent_delta_rule(q, k, v, beta, output_final_state=True)
    assert o.dtype == dtype and s.dtype == torch.float32
    torch.testing.assert_close(o, o_ref, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(s, s_ref, atol=1e-4, rtol=1e-4)


def test_final_state_only_when_asked():
    q, k, v, beta, _ = inputs(1, 5, 1, 8, 8)
    assert chunk_delta_rule(q, k, v, beta)[1] is None
    assert fused_recurrent_delta_rule(q, k, v, beta)[1] is None
