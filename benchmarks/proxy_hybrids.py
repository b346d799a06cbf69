"""GPU benchmark: a proxy run of each seed hybrid beside a plain compiled Transformer of the same size.

Every architecture trains for the same token budget on the built-in corpus; the table gives validation bits per
byte, perplexity and steady-state training tokens/s (timed exclusively, after warm-up and compilation).

    PYTHONUNBUFFERED=1 python benchmarks/proxy_hybrids.py --tokens 2000000 --out results.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from archsearch import Architecture, BlockSpec, LayerSpec
from archsearch.proxy import ProxySettings, evaluate

D, N = 512, 16


def stack(mixers: list[str], channels: list[str | None] | None = None, **params) -> Architecture:
    channels = channels or ["glu"] * len(mixers)
    layers = []
    for m, c in zip(mixers, channels, strict=True):
        mp = {k: v for k, v in params.items() if k in BlockSpec.make(m, {}, D).fam.params}
        cp = {k: v for k, v in params.items() if c and k in BlockSpec.make(c, {}, D).fam.params}
        layers.append(LayerSpec(BlockSpec.make(m, mp, D), BlockSpec.make(c, cp, D) if c else None))
    return Architecture(D, tuple(layers))


ARCHS = {
    "transformer (compiled)": (stack(["attn"] * N, heads=8), True),
    "transformer": (stack(["attn"] * N, heads=8), False),
    "deltanet": (stack(["deltanet"] * N, heads=8), False),
    "deltanet + swa alternating": (stack(["deltanet", "swa"] * (N // 2), heads=8, window=512), False),
    "deltanet + 2 attention": (stack(["deltanet"] + ["attn"] + ["deltanet"] * 6 + ["attn"] + ["deltanet"] * 7, heads=8), False),
    "h3 + 2 attention": (stack(["h3"] + ["attn"] + ["h3"] * 6 + ["attn"] + ["h3"] * 7, heads=8), False),
    "hyena": (stack(["hyena"] * N), False),
    "gau": (stack(["gau"] * (2 * N), [None] * (2 * N)), False),
    "moe (switch, 8 experts)": (stack(["attn"] * N, ["glu", "moe"] * (N // 2), heads=8, experts=8), False),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=2_000_000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--only", default="", help="comma-separated name prefixes to run")
    ap.add_argument("--out", default="proxy_hybrids.json")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    rows = []
    for name, (arch, compiled) in ARCHS.items():
        if args.only and not any(name.startswith(prefix) for prefix in args.only.split(",")):
            continue
        settings = ProxySettings(tokens=args.tokens, batch_size=args.batch_size, seq_len=args.seq_len, compile=compiled,
                                 evals=2, eval_tokens=262_144, timing_steps=10, device=args.device)
        start = time.time()
        try:
            m = evaluate(arch, settings)
            row = {"name": name, "summary": arch.summary(), "params": arch.cost().params, "status": m.status, "reason": m.reason,
                   "bpb": m.bits_per_byte, "ppl": m.perplexity, "tokens_per_s": m.train_tokens_per_s,
                   "peak_gib": (m.peak_memory_bytes or 0) / 2**30, "wall_s": time.time() - start, "corpus": m.corpus_digest}
        except Exception as e:  # a broken family must not hide the others' numbers
            row = {"name": name, "summary": arch.summary(), "status": "error", "reason": f"{type(e).__name__}: {e}"[:200]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    DEVICE_NAME = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    base = next((r["tokens_per_s"] for r in rows if r["name"] == "transformer (compiled)" and r.get("tokens_per_s")), None)
    with open(args.out, "w") as f:
        json.dump({"device": DEVICE_NAME, "torch": torch.__version__, "tokens": args.tokens,
                   "batch": f"{args.batch_size}x{args.seq_len}", "rows": rows}, f, indent=1)
    print(f"\n{DEVICE_NAME}, torch {torch.__version__}, {args.tokens:,} tokens at {args.batch_size}x{args.seq_len}")
    print("| architecture | summary | params | bits/byte | ppl | train tok/s | vs compiled transformer | peak GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["status"] != "ok":
            print(f"| {r['name']} | {r['summary']} | - | {r['status']}: {r.get('reason', '')[:80]} | | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
        print(f"| {r['name']} | {r['summary']} | {r['params'] / 1e6:.1f}M | {r['bpb']:.3f} | {r['ppl']:.2f} | {r['tokens_per_s']:,.0f} | {ratio} | {r['peak_gib']:.1f} |")


if __name__ == "__main__":
    main()
