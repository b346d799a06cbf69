"""Channel mixing MLPs: SwiGLU, GeGLU, ReGLU (gated) and the plain GELU MLP."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..kernels.moe import mlp
from ._family import BlockFamily, Param
from ._layers import Block

GATED = ("swiglu", "geglu", "reglu")


def mlp_hidden(kind: str, expansion: float, multiple_of: int, d_model: int) -> int:
    """Hidden width: expansion * d_model rounded up to a multiple (tensor-core friendly)."""
    return multiple_of * math.ceil(expansion * d_model / multiple_of)


def mlp_params(kind: str, hidden: int, d_model: int) -> int:
    return (3 if kind in GATED else 2) * d_model * hidden


class GLUFamily(BlockFamily):
    name, role, letter = "glu", "channel", "g"
    doc = "gated MLP (swiglu, geglu, reglu) or plain GELU MLP"
    params = {
        "kind": Param(str, "swiglu", options=(*GATED, "mlp"), doc="activation and gating"),
        "expansion": Param(float, None, min=0.25, max=32, doc="hidden / d_model; default 8/3 gated, 4 plain"),
        "multiple_of": Param(int, 64, min=1, doc="hidden width is rounded up to this multiple"),
    }

    def resolve(self, params, d_model):
        if params.get("expansion") is None:
            params["expansion"] = 8 / 3 if params["kind"] in GATED else 4.0
        return params

    def hidden(self, p, d_model: int) -> int:
        return mlp_hidden(p["kind"], p["expansion"], p["multiple_of"], d_model)

    def param_count(self, p, d_model):
        return mlp_params(p["kind"], self.hidden(p, d_model), d_model)

    def flops_per_token(self, p, d_model, context):
        return 2 * self.param_count(p, d_model)

    def build(self, p, d_model):
        return MLP(d_model, self.hidden(p, d_model), p["kind"])


class MLP(Block):
    """A token-wise MLP without bias: gated (swiglu, geglu, reglu: act(x w1) * (x w3), then w2) or plain (mlp).

    Parameters w1 [d, hidden], w3 [d, hidden] (gated kinds only), w2 [hidden, d], stored input-major like the
    stacked weights of the mixture-of-experts experts, which are this MLP (`archsearch.kernels.moe.mlp`) per expert.
    GELU is the tanh approximation. Stateless, so decoding applies it to the token.
    """

    residual_params = ("w2",)

    def __init__(self, d_model: int, hidden: int, kind: str, std: float = 0.02) -> None:
        super().__init__()
        self.kind = kind
        self.w1 = nn.Parameter(torch.randn(d_model, hidden) * std)
        self.w3 = nn.Parameter(torch.randn(d_model, hidden) * std) if kind in GATED else None
        self.w2 = nn.Parameter(torch.randn(hidden, d_model) * std)

    def forward(self, x: Tensor) -> Tensor:
        return mlp(x, self.w1, self.w2, self.w3, self.kind)

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        return self(x), state

    def extra_repr(self) -> str:
        return f"kind={self.kind}, d_model={self.w1.shape[0]}, hidden={self.w1.shape[1]}"


FAMILY = GLUFamily()
