"""Channel mixing MLPs: SwiGLU, GeGLU, ReGLU (gated) and the plain GELU MLP."""

from __future__ import annotations

import math

from ._family import BlockFamily, Param

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


FAMILY = GLUFamily()
