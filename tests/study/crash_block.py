"""A plugin block family whose layer always fails: the study must record the failure and go on."""

import torch

from archsearch.blocks import REGISTRY, Block, BlockFamily, register


class Crash(Block):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.w = torch.nn.Linear(d_model, d_model, bias=False)

    def forward(self, x):
        raise RuntimeError("the crash block always fails")


class CrashFamily(BlockFamily):
    name, role, letter = "crash", "mixer", "X"
    params = {}

    def param_count(self, p, d_model):
        return d_model * d_model

    def flops_per_token(self, p, d_model, context):
        return 2.0 * d_model * d_model

    def build(self, p, d_model):
        return Crash(d_model)


if "crash" not in REGISTRY:
    register(CrashFamily())
