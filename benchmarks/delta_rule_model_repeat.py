"""The deltanet model's training step with our delta-rule op and with fla-core's, repeated, with allocator counters.

    PYTHONUNBUFFERED=1 python benchmarks/delta_rule_model_repeat.py
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python benchmarks/delta_rule_model_repeat.py
(needs fla-core on the path: the wheels that ../shared/device/make-wheels.sh downloads)
"""

import importlib
import os
import time

import torch
from fla.ops.delta_rule import chunk_delta_rule as fla_op

from archsearch.architecture import Architecture, BlockSpec, LayerSpec
from archsearch.kernels.delta_rule import chunk_delta_rule
from archsearch.model import build_model

D, LAYERS, BATCH, SEQ = 512, 17, 32, 1024
block_module = importlib.import_module("archsearch.blocks.deltanet")  # the module, not the family the package exports


def measure(name: str, op, steps: int = 8) -> None:
    block_module.chunk_delta_rule = op
    layer = LayerSpec(BlockSpec.make("deltanet", {"heads": 8}, D), BlockSpec.make("glu", {}, D))
    torch.manual_seed(0)
    model = build_model(Architecture(D, (layer,) * LAYERS, 256)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    x = torch.randint(0, 256, (BATCH, SEQ + 1), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x[:, :-1], x[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    after = torch.cuda.memory_stats()
    print(
        os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default"), name,
        f"{(time.perf_counter() - start) / steps * 1e3:.1f} ms/step",
        "alloc retries", after["num_alloc_retries"] - before["num_alloc_retries"],
        f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True,
    )  # fmt: skip


if __name__ == "__main__":
    measure("ours", chunk_delta_rule)
    measure("fla", fla_op)
    block_module.chunk_delta_rule = chunk_delta_rule
