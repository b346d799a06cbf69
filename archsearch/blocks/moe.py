"""Mixture of experts: a top-k router over gated-MLP experts (top-1 is Switch), with capacity and auxiliary losses."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..kernels.moe import moe_mlp
from ._family import BlockFamily, Param
from ._layers import Block
from .glu import GATED, MLP, GLUFamily, mlp_hidden, mlp_params


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

    def build(self, p, d_model):
        return MoE(
            d_model,
            experts=p["experts"],
            top_k=p["top_k"],
            kind=p["kind"],
            hidden=mlp_hidden(p["kind"], p["expansion"], p["multiple_of"], d_model),
            shared_experts=p["shared_experts"],
            capacity_factor=p["capacity_factor"],
            aux_loss_weight=p["aux_loss"],
            z_loss_weight=p["z_loss"],
        )


class MoE(Block):
    """A mixture-of-experts channel block: a float32 top-k softmax router over MLP experts (top-1 is Switch).

    Parameters: router.weight [experts, d]; the routed experts' stacked weights w1, w3 [experts, d, hidden] (w3 for
    gated kinds only) and w2 [experts, hidden, d], expert e being the glu MLP (w1[e], w2[e], w3[e]); `shared` (a glu
    `MLP` of width shared_experts * hidden, which equals the unweighted sum of that many experts) when
    shared_experts > 0.

    Each token goes to its top_k experts, weighted by their router probabilities (renormalised over the chosen ones
    when top_k > 1). In training, with capacity_factor > 0, an expert takes at most
    ceil(capacity_factor * tokens * top_k / experts) token slots; slots are granted position-major (every
    sequence's token 0, then token 1, ...) so no routing depends on a later position, and a dropped slot adds
    nothing. Evaluation and decoding have no capacity limit, so decoding equals the forward.

    Forward sets `aux_loss` = aux_loss_weight * experts * sum_e(fraction of slots routed to e * mean router
    probability of e) + z_loss_weight * mean(logsumexp(logits)^2), and records in buffers (not parameters) the
    last call's `expert_fraction` [experts] (routed slots per expert, before capacity) and `drop_rate` (share of
    slots dropped by capacity).
    """

    expert_fraction: Tensor
    drop_rate: Tensor

    def __init__(
        self,
        d_model: int,
        experts: int,
        top_k: int,
        kind: str,
        hidden: int,
        shared_experts: int = 0,
        capacity_factor: float = 0.0,
        aux_loss_weight: float = 0.0,
        z_loss_weight: float = 0.0,
        std: float = 0.02,
    ) -> None:
        super().__init__()
        self.experts, self.top_k, self.kind = experts, top_k, kind
        self.capacity_factor, self.aux_loss_weight, self.z_loss_weight = capacity_factor, aux_loss_weight, z_loss_weight
        self.router = nn.Linear(d_model, experts, bias=False, dtype=torch.float32)
        nn.init.normal_(self.router.weight, std=std)
        self.w1 = nn.Parameter(torch.randn(experts, d_model, hidden) * std)
        self.w3 = nn.Parameter(torch.randn(experts, d_model, hidden) * std) if kind in GATED else None
        self.w2 = nn.Parameter(torch.randn(experts, hidden, d_model) * std)
        self.shared = MLP(d_model, shared_experts * hidden, kind, std) if shared_experts else None
        self.residual_params = ("w2", "shared.w2") if shared_experts else ("w2",)
        self.register_buffer("expert_fraction", torch.zeros(experts), persistent=False)
        self.register_buffer("drop_rate", torch.zeros(()), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        tokens = x.transpose(0, 1).reshape(t * b, d)  # position-major, the order capacity grants slots in
        return self.route(tokens).view(t, b, d).transpose(0, 1)

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        return self.route(x), state

    def route(self, tokens: Tensor) -> Tensor:
        """The layer on tokens [N, d] in priority order (earlier rows get capacity first): [N, d]."""
        logits = F.linear(tokens.float(), self.router.weight.float())
        probs = logits.softmax(-1)
        gates, expert_index = probs.topk(self.top_k, dim=-1)
        if self.top_k > 1:
            gates = gates / gates.sum(-1, keepdim=True)
        routed = expert_index
        if self.training and self.capacity_factor > 0:
            capacity = math.ceil(self.capacity_factor * tokens.shape[0] * self.top_k / self.experts)
            routed = drop_over_capacity(expert_index, capacity, self.experts)
        fraction = expert_counts(expert_index, self.experts).float() / expert_index.numel()
        balance = self.experts * (fraction * probs.mean(0)).sum()
        z = torch.logsumexp(logits, dim=-1).pow(2).mean()
        self.aux_loss = self.aux_loss_weight * balance + self.z_loss_weight * z
        with torch.no_grad():
            self.expert_fraction.copy_(fraction)
            self.drop_rate.copy_((routed < 0).float().mean())
        y = moe_mlp(tokens, routed, gates, self.w1, self.w2, self.w3, self.kind)
        return y if self.shared is None else y + self.shared(tokens)

    def extra_repr(self) -> str:
        return (
            f"experts={self.experts}, top_k={self.top_k}, kind={self.kind}, hidden={self.w1.shape[2]}, "
            f"capacity_factor={self.capacity_factor}"
        )


def drop_over_capacity(expert_index: Tensor, capacity: int, experts: int) -> Tensor:
    """expert_index [N, k] with the slots beyond each expert's `capacity` set to -1.

    Slots are granted in row-major order: row n before row n + 1, and within a row its first choice first.
    """
    flat = expert_index.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = expert_counts(flat, experts)
    first = counts.cumsum(0) - counts  # where each expert's run starts in the sorted order
    rank = torch.empty_like(flat)
    rank[order] = torch.arange(flat.numel(), device=flat.device) - first[flat[order]]
    return torch.where(rank < capacity, flat, -1).view_as(expert_index)


def expert_counts(expert_index: Tensor, experts: int) -> Tensor:
    """How many entries of expert_index (values in [0, experts)) name each expert: [experts] int64.

    Unlike `torch.bincount`, which reads the largest value back to size its output, no host sync stalls the GPU.
    """
    flat = expert_index.reshape(-1)
    return torch.zeros(experts, dtype=torch.int64, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))


FAMILY = MoEFamily()
