"""What the MLP and the mixture-of-experts dispatch compute, in plain PyTorch: the definitions the fast forms must equal.

Weights are stored input-major, as the grouped GEMM reads them: one MLP is w1, w3 [d, hidden] and w2 [hidden, d];
stacked experts add a leading expert dimension, w1, w3 [E, d, hidden] and w2 [E, hidden, d], so expert e is the
MLP (w1[e], w2[e], w3[e]). w3 (the gate's second branch) is None for the plain MLP.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

# GELU is the tanh approximation for both geglu and the plain MLP (as in GPT-2 and T5 v1.1): cheaper than the
# erf form, fusable in Triton, and within 1e-3 of it.
ACTIVATIONS = {
    "swiglu": F.silu,
    "geglu": partial(F.gelu, approximate="tanh"),
    "reglu": F.relu,
    "mlp": partial(F.gelu, approximate="tanh"),
}


def activate(h1: Tensor, h3: Tensor | None, kind: str) -> Tensor:
    """The hidden activation of an MLP of `kind`: act(h1) * h3 when gated (h3 given), act(h1) when plain."""
    a = ACTIVATIONS[kind](h1)
    return a if h3 is None else a * h3


def mlp(x: Tensor, w1: Tensor, w2: Tensor, w3: Tensor | None, kind: str) -> Tensor:
    """One MLP without bias on x [..., d]: (act(x w1) * (x w3)) w2 when gated, act(x w1) w2 when plain."""
    return activate(x @ w1, None if w3 is None else x @ w3, kind) @ w2


def moe_mlp_reference(
    x: Tensor, expert_index: Tensor, gates: Tensor, w1: Tensor, w2: Tensor, w3: Tensor | None, kind: str
) -> Tensor:
    """Mixture of experts by a loop over experts: y[n] = sum_j gates[n, j] * MLP_{expert_index[n, j]}(x[n]).

    x [N, d]; expert_index [N, k] integer, -1 for a slot that was dropped (it adds nothing); gates [N, k];
    stacked weights as in the module docstring. Gated sums are accumulated in float32 at least; y comes back in x's
    dtype.
    """
    acc = torch.promote_types(x.dtype, torch.float32)
    y = torch.zeros(x.shape, dtype=acc, device=x.device)
    for e in range(w1.shape[0]):
        token, slot = (expert_index == e).nonzero(as_tuple=True)
        out = mlp(x[token], w1[e], w2[e], None if w3 is None else w3[e], kind)
        y = y.index_add(0, token, out.to(acc) * gates[token, slot, None].to(acc))
    return y.to(x.dtype)
