"""H3 specifics: the shift SSM is a causal convolution, the S4D recurrence equals its kernel, the block is safari's H3."""

import math

import pytest
import torch
import torch.nn.functional as F

from archsearch.architecture import BlockSpec
from archsearch.blocks.h3 import DiagonalSSM, ShiftSSM
from archsearch.kernels.long_conv import long_conv_direct

ATOL = RTOL = 1e-4


def h3(d_model, **params):
    torch.manual_seed(0)
    spec = BlockSpec.make("h3", params, d_model)
    return spec.fam.build(spec.p, d_model)


def diagonal_ssm(heads, state_size, seed=0):
    """An S4D with parameters away from their initial values, so the test covers trained-looking kernels."""
    torch.manual_seed(seed)
    ssm = DiagonalSSM(heads, state_size)
    with torch.no_grad():
        ssm.log_dt.uniform_(math.log(1e-2), math.log(0.5))
        ssm.log_A_real.normal_(math.log(0.5), 0.5)
        ssm.A_imag.add_(torch.randn_like(ssm.A_imag))
    return ssm


@pytest.mark.parametrize(("taps", "t"), [(4, 11), (8, 8), (16, 5)], ids=["short", "equal", "longer-than-T"])
def test_shift_ssm_is_a_causal_convolution_with_its_taps(taps, t):
    torch.manual_seed(0)
    shift = ShiftSSM(6, taps)
    u = torch.randn(2, 6, t)
    # conv1d correlates, so lag j meets the flipped kernel; left padding makes it causal
    conv = F.conv1d(F.pad(u, (taps - 1, 0)), shift.kernel.flip(-1)[:, None], groups=6)
    with torch.no_grad():
        torch.testing.assert_close(shift(u), conv + shift.D[:, None] * u, atol=ATOL, rtol=RTOL)
        register, steps = shift.init_state(2, u.device, u.dtype), []
        for i in range(t):
            y, register = shift.step(u[..., i], register)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, -1), conv + shift.D[:, None] * u, atol=ATOL, rtol=RTOL)


def test_shift_register_keeps_the_last_state_size_inputs_newest_first():
    shift = ShiftSSM(3, 4)
    u = torch.randn(1, 3, 6)
    register = shift.init_state(1, u.device, u.dtype)
    with torch.no_grad():
        for i in range(6):
            _, register = shift.step(u[..., i], register)
    torch.testing.assert_close(register, u[..., 2:].flip(-1))


@pytest.mark.parametrize(("heads", "state_size", "t"), [(3, 8, 40), (2, 2, 17), (4, 16, 65)])
def test_s4d_recurrent_step_equals_the_kernels_convolution(heads, state_size, t):
    ssm = diagonal_ssm(heads, state_size)
    u = torch.randn(2, 5, heads, t)
    with torch.no_grad():
        y = ssm(u)
        state, steps = ssm.init_state((2, 5), u.device), []
        for i in range(t):
            y_t, state = ssm.step(u[..., i], state)
            steps.append(y_t)
        direct = long_conv_direct(u, ssm.kernel(t), ssm.D)
    torch.testing.assert_close(y, direct, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(torch.stack(steps, -1), y, atol=ATOL, rtol=RTOL)


def test_s4d_kernel_is_the_zoh_formula_and_the_recurrences_impulse_response():
    ssm = diagonal_ssm(3, 8)
    t = 30
    with torch.no_grad():
        k = ssm.kernel(t)
        a = (-torch.exp(ssm.log_A_real) + 1j * ssm.A_imag).to(torch.complex128)
        dt = torch.exp(ssm.log_dt).double()[:, None]
        c = torch.view_as_complex(ssm.C).to(torch.complex128)
        lags = torch.arange(t, dtype=torch.float64)
        d_b = (torch.exp(dt * a) - 1) / a
        powers = torch.exp((dt * a)[..., None] * lags)
        formula = 2 * ((c * d_b)[..., None] * powers).sum(1).real
        torch.testing.assert_close(k.double(), formula, atol=1e-5, rtol=1e-5)
        state, response = ssm.init_state((1,), k.device), []
        for i in range(t):
            y, state = ssm.step(torch.full((1, 3), float(i == 0)), state)
            response.append(y[0])
    torch.testing.assert_close(torch.stack(response, -1), k + torch.eye(t)[0] * ssm.D[:, None], atol=ATOL, rtol=RTOL)


def complex_kernel(ssm, length):
    """The S4D kernel in complex arithmetic, as the formula reads: what the real form of `DiagonalSSM.kernel` computes."""
    a = torch.complex(-torch.exp(ssm.log_A_real), ssm.A_imag)
    dt_a = torch.exp(ssm.log_dt)[:, None] * a
    d_b = torch.expm1(dt_a) / a
    powers = torch.exp(dt_a[..., None] * torch.arange(length, dtype=torch.float32))
    return 2 * torch.einsum("hn,hnl->hl", torch.view_as_complex(ssm.C) * d_b, powers).real


@pytest.mark.parametrize(("heads", "state_size", "length", "seed"), [(3, 8, 300, 0), (5, 16, 64, 1), (2, 2, 129, 2)])
def test_s4d_real_kernel_equals_the_complex_form_and_its_gradients(heads, state_size, length, seed):
    ssm = diagonal_ssm(heads, state_size, seed)
    cotangent = torch.randn(heads, length)
    results = []
    for kernel in (ssm.kernel, lambda t: complex_kernel(ssm, t)):
        ssm.zero_grad(set_to_none=True)
        k = kernel(length)
        (k * cotangent).sum().backward()
        results.append((k.detach(), {n: p.grad.clone() for n, p in ssm.named_parameters() if n != "D"}))
    (k, grads), (k_ref, grads_ref) = results
    torch.testing.assert_close(k, k_ref, rtol=1e-5, atol=1e-5 * k_ref.abs().max().item())
    assert grads.keys() == {"log_dt", "log_A_real", "A_imag", "C"}
    for name, g in grads.items():
        ref = grads_ref[name]
        torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item(), msg=name)


def test_s4d_starts_from_s4d_lin():
    ssm = DiagonalSSM(4, 8)
    torch.testing.assert_close(-torch.exp(ssm.log_A_real), torch.full((4, 4), -0.5))
    torch.testing.assert_close(ssm.A_imag, math.pi * torch.arange(4.0).expand(4, 4))
    dt = torch.exp(ssm.log_dt)
    assert (dt >= 1e-3).all() and (dt <= 1e-1).all()


def reference_h3(block, x):
    """Safari's H3 written out with loops over heads and the direct convolution."""
    d, hd, heads = block.d_model, block.head_dim, block.heads
    t = x.shape[1]
    q, k, v = (proj(x).transpose(1, 2) for proj in (block.q_proj, block.k_proj, block.v_proj))
    k = long_conv_direct(k, block.shift.kernel, block.shift.D)
    kernel, skip = block.ssm.kernel(t), block.ssm.D
    y = torch.zeros_like(q)
    for h in range(heads):
        rows = slice(h * hd, (h + 1) * hd)
        for j in range(hd):  # value index within the head
            kv = k[:, rows] * v[:, h * hd + j, None]  # [B, hd (key index), T]
            s = long_conv_direct(kv, kernel[h].expand(hd, t), skip[h].expand(hd))
            y[:, h * hd + j] = (q[:, rows] * s).sum(1)
    assert y.shape[1] == d
    return block.out_proj(y.transpose(1, 2))


@pytest.mark.parametrize("head_dim", [1, 2, 4])
def test_block_is_h3_with_per_head_outer_products(head_dim):
    block = h3(16, head_dim=head_dim, state_size=6)
    x = torch.randn(2, 21, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_h3(block, x), atol=ATOL, rtol=RTOL)


def test_head_dim_one_is_the_original_elementwise_h3():
    block = h3(8, head_dim=1, state_size=4)
    x = torch.randn(2, 12, 8)
    with torch.no_grad():
        q, k, v = (proj(x).transpose(1, 2) for proj in (block.q_proj, block.k_proj, block.v_proj))
        y = q * block.ssm(block.shift(k) * v)
        torch.testing.assert_close(block(x), block.out_proj(y.transpose(1, 2)), atol=ATOL, rtol=RTOL)


def test_decode_state_has_the_cost_models_size():
    spec = BlockSpec.make("h3", {"head_dim": 4, "state_size": 8}, 16)
    block = spec.fam.build(spec.p, 16)
    register, modes = block.init_state(1, torch.device("cpu"), torch.float32)
    reals = register.numel() + 2 * modes.numel()  # a complex mode is two reals
    assert reals * 4 == spec.fam.state_bytes(spec.p, 16, context=100, dtype_bytes=4)


def test_residual_params_name_the_output_projection():
    block = h3(8, head_dim=2, state_size=4)
    assert [block.get_parameter(n) for n in block.residual_params] == [block.out_proj.weight]
