"""Mixture of experts: a top-k router over gated-MLP experts (top-1 is Switch), with capacity and auxiliary losses."""

from __future__ import annotations

from ._family import BlockFamily, Param
from .glu import GATED, GLUFamily, mlp_hidden, mlp_params


class MoEFamily(BlockFamily):
    name, role, letter = "moe", "channel", "m"
    doc = "mixture of experts: top-k router, MLP experts, capacity factor, load-balancing and router z-loss"
    params = {
        "experts": Param(int, 8, min=1, doc="routed experts"),
        "top_k": Param(int, 1, min=1, doc="experts per token (1: Switch)"),
        "kind": Param(str, "swiglu", options=(*GATED, "mlp"), doc="expert MLP"),
        "expansion": Param(float, None, min=0.25, max=32, doc="expert hidden / d_model; default 8/3 gated, 4 plain"),
        "multiple_of": Param(int, 64, min=1, doc="expert hidden width is rounded up to this multiple"),
        "shared_experts": Param(int, 0, min=0, doc="experts every token also goes through"),
        "capacity_factor": Param(float, 1.25, min=0.0, doc="slots per expert relative to an even split (0: no limit)"),
        "aux_loss": Param(float, 0.01, min=0.0, doc="weight of the load-balancing loss"),
        "z_loss": Param(float, 0.001, min=0.0, doc="weight of the router z-loss"),
    }
    resolve = GLUFamily.resolve

    def violations(self, p, d_model):
        if p["top_k"] > p["experts"]:
            return [("top_k", f"{p['top_k']} exceeds experts {p['experts']}")]
        return []

    def expert_params(self, p, d_model: int) -> int:
        return mlp_params(p["kind"], mlp_hidden(p["kind"], p["expansion"], p["multiple_of"], d_model), d_model)

    def param_count(self, p, d_model):
        return d_model * p["experts"] + (p["experts"] + p["shared_experts"]) * self.expert_params(p, d_model)

    def active_param_count(self, p, d_model) -> int:
        return d_model * p["experts"] + (p["top_k"] + p["shared_experts"]) * self.expert_params(p, d_model)

    def flops_per_token(self, p, d_model, context):
        return 2 * self.active_param_count(p, d_model)


FAMILY = MoEFamily()
