"""GPU check: compiled (regional, fullgraph) against eager training steps, loss and every gradient, per family.

In float32 (the kernels' own arithmetic, autocast off) a difference between the compiled and the eager model is a
defect of a custom op's fake or autograd registration under Inductor; in bf16 autocast it may be rounding. Each
family runs in its own process, so one that fails on the device (an illegal memory access) cannot take the others
down, and its error is reported.

    PYTHONUNBUFFERED=1 python benchmarks/compile_check.py [--families deltanet,brt,...] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from archsearch import Architecture, BlockSpec, LayerSpec
from archsearch.model import build_model

D, LAYERS, BATCH, SEQ = 256, 2, 4, 512
FAMILIES = ["attn", "swa", "deltanet", "h3", "hyena", "gau", "brt", "moe"]


def arch(family: str) -> Architecture:
    channel = None if family == "gau" else ("moe" if family == "moe" else "glu")
    mixer = "attn" if family == "moe" else family
    params = {"heads": 4} if mixer in ("attn", "swa", "deltanet") else {}
    layers = tuple(LayerSpec(BlockSpec.make(mixer, params, D), BlockSpec.make(channel, {}, D) if channel else None)
                   for _ in range(LAYERS))
    return Architecture(D, layers, vocab_size=256)


def loss_and_grads(model, x, dtype):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss = model(x, x).loss
    loss.backward()
    return loss.item(), torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])


def one(family: str) -> dict:
    out = {"family": family}
    torch.manual_seed(0)
    x = torch.randint(0, 256, (BATCH, SEQ), device="cuda")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        model = build_model(arch(family)).cuda()
        loss, g = loss_and_grads(model, x, dtype)
        model.compile_regions(fullgraph=True, dynamic=False)
        loss_c, g_c = loss_and_grads(model, x, dtype)
        out[name] = {"loss_eager": loss, "loss_compiled": loss_c,
                     "grad_rel_err": ((g_c - g).norm() / g.norm().clamp_min(1e-30)).item()}
    torch.cuda.synchronize()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--one")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    rows = []
    for family in args.families.split(","):
        p = subprocess.run([sys.executable, __file__, "--one", family], capture_output=True, text=True, timeout=300)
        lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
        rows.append(json.loads(lines[-1]) if p.returncode == 0 and lines else
                    {"family": family, "error": (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:300]})
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)
    print(f"\n{'family':10} {'fp32 loss e/c':>24} {'fp32 grad err':>14} {'bf16 loss e/c':>24} {'bf16 grad err':>14}")
    for r in rows:
        if "error" in r:
            print(f"{r['family']:10} error: {r['error']}")
            continue
        a, b = r["fp32"], r["bf16"]
        print(f"{r['family']:10} {a['loss_eager']:11.5f}/{a['loss_compiled']:<11.5f} {a['grad_rel_err']:14.2e} "
              f"{b['loss_eager']:11.5f}/{b['loss_compiled']:<11.5f} {b['grad_rel_err']:14.2e}")


if __name__ == "__main__":
    main()
