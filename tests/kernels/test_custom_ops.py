"""Every Triton kernel is a `torch.library` op: schema, fake (meta) implementation, autograd registration and
AOT dispatch checked by `torch.library.opcheck` on random inputs.

Without CUDA the kernels run on the CPU under Triton's interpreter, so shapes are tiny. Static shapes only: the
proxy compiles with `dynamic=False`, and the launchers size their grids from Python integers.
"""

import gc
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from archsearch.kernels.attention import sliding_window as sliding_window_module
from archsearch.kernels.delta_rule import chunk, fused_recurrent
from archsearch.kernels.long_conv import fft, monarch
from archsearch.kernels.moe import combine, swiglu
from archsearch.kernels.short_conv import fused

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
STATIC = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_static")


def randn(*shape, grad=True, dtype=torch.float32):
    return torch.randn(*shape, device=DEVICE, dtype=dtype, requires_grad=grad)


def delta_inputs(b=1, t=20, h=2, dk=16, dv=16):
    q, v = randn(b, t, h, dk), randn(b, t, h, dv)
    k = F.normalize(torch.randn(b, t, h, dk, device=DEVICE), dim=-1).requires_grad_()
    beta = (torch.rand(b, t, h, device=DEVICE) * 0.9 + 0.05).requires_grad_()
    return q, k, v, beta


def positions(n, k, rows):
    """pos [n, k]: each of `rows` sorted rows used by exactly one slot, one slot dropped (-1)."""
    perm = torch.randperm(n * k, device=DEVICE)
    pos = torch.where(perm < rows, perm, -1).view(n, k)
    return pos


def monarch_plan(t):
    return list(monarch.plan(monarch.fft_size(t), torch.device(DEVICE), False))


CASES = {
    "short_conv": lambda: (fused._short_conv_op, (randn(2, 40, 24), randn(24, 4))),
    # the backward ops are not differentiable themselves (no double backward): inputs without gradients
    "short_conv_backward": lambda: (
        fused._short_conv_backward_op, (randn(2, 40, 24, grad=False), randn(24, 4, grad=False), randn(2, 40, 24, grad=False))
    ),
    "swiglu": lambda: (swiglu._swiglu_op, (randn(3, 5, 16),)),
    "swiglu_backward": lambda: (swiglu._swiglu_backward_op, (randn(3, 5, 16, grad=False), randn(3, 5, 8, grad=False))),
    "moe_combine": lambda: (combine._combine_op, (randn(11, 8), positions(6, 2, 11), randn(6, 2))),
    "moe_gather": lambda: (combine._gather_op, (randn(6, 8), torch.randint(0, 6, (11,), device=DEVICE), positions(6, 2, 11))),
    "long_conv_monarch": lambda: (monarch._monarch_op, (randn(2, 3, 40), randn(3, 40), randn(3), monarch_plan(40), False)),
    "long_conv_monarch_no_skip": lambda: (monarch._monarch_op, (randn(2, 3, 40), randn(3, 24), None, monarch_plan(40), False)),
    "long_conv_cufft": lambda: (fft._cufft_op, (randn(2, 3, 40), randn(3, 50), randn(3), False)),
    "sliding_window_attention": lambda: (
        sliding_window_module._attention_op, (randn(1, 24, 4, 16), randn(1, 24, 2, 16), randn(1, 24, 2, 16), 8, 0.25)
    ),
    "chunk_delta_rule": lambda: (chunk._chunk_op, (*delta_inputs(), 0.25, randn(1, 2, 16, 16), True, 16, True)),
    "chunk_delta_rule_inference": lambda: (
        chunk._chunk_op, (*(x.detach() for x in delta_inputs()), 0.25, None, False, 16, False)
    ),
    "fused_recurrent_delta_rule": lambda: (
        fused_recurrent._recurrent_op, (*(x.detach() for x in delta_inputs(t=5)), 0.25, randn(1, 2, 16, 16, grad=False), True)
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_triton_op_passes_opcheck(name):
    torch.manual_seed(0)
    op, args = CASES[name]()
    torch.library.opcheck(op, args, test_utils=STATIC)


def _tensors_kept_by_archsearch() -> set[int]:
    """The ids of tensors reachable from archsearch's modules: their globals, and what those hold (caches,
    closures, lru_cache wrappers), without walking into other packages' modules. Unlike a count of every live
    tensor, unrelated garbage and other libraries' lazy state cannot change it."""
    ours = [m for name, m in list(sys.modules.items()) if name == "archsearch" or name.startswith("archsearch.")]
    others = {id(vars(m)) for m in list(sys.modules.values()) if m is not None and m not in ours}
    found, seen, stack = set(), set(), [vars(m) for m in ours]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or id(obj) in others or isinstance(obj, types.ModuleType):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            found.add(id(obj))
        else:
            stack.extend(gc.get_referents(obj))
    return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_op_keeps_a_tensor_alive_once_it_returns(name):
    """An op that caches tensors of its own breaks CUDA graph trees: the first cached tensor comes from a tree's
    memory pool, and the cache keeps it alive. The long convolution's plan did this on the H200, so every H3 and
    Hyena model trained without graphs. Caches belong to the traced code around the ops."""
    torch.manual_seed(0)
    op, args = CASES[name]()
    before = _tensors_kept_by_archsearch()
    out = op(*args)
    del out
    assert _tensors_kept_by_archsearch() == before
