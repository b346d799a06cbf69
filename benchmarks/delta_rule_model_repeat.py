"""The deltanet model's training step with our delta-rule op and with fla-core's, repeated, with allocator counters.

    PYTHONUNBUFFERED=1 python benchmarks/delta_rule_model_repeat.py   (needs fla-core; run it also with
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True)
"""
import importlib
import os
import time

import torch
from fla.ops.delta_rule import chunk_delta_rule as fla_op

from archsearch.architecture import Architecture, BlockSpec, LayerSpec
from archsearch.kernels.delta_rule import chunk_delta_rule
from archsearch.model import build_model

blk = importlib.import_module("archsearch.blocks.deltanet")
d, L, B, T = 512, 17, 32, 1024
layer = LayerSpec(BlockSpec.make("deltanet", {"heads": 8}, d), BlockSpec.make("glu", {}, d))
arch = Architecture(d, (layer,) * L, 256)
for name, op in [("ours", chunk_delta_rule), ("fla", fla_op)]:
    blk.chunk_delta_rule = op
    torch.manual_seed(0)
    model = build_model(arch).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    x = torch.randint(0, 256, (B, T + 1), device="cuda")
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x[:, :-1], x[:, 1:]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    s0 = torch.cuda.memory_stats()
    t0 = time.perf_counter()
    for _ in range(8):
        step()
    torch.cuda.synchronize()
    s1 = torch.cuda.memory_stats()
    print(os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default"), name, f"{(time.perf_counter() - t0) / 8 * 1e3:.1f} ms/step",
          "alloc retries", s1["num_alloc_retries"] - s0["num_alloc_retries"], "cudaMalloc", s1.get("num_device_alloc", 0) - s0.get("num_device_alloc", 0),
          f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
    del model, opt
    torch.cuda.empty_cache()
