"""GPU benchmark: proxy runs of every pure block family and the seed hybrids, compiled and eager, beside the
compiled Transformer of the same size measured in the same run.

Every architecture trains on the built-in corpus with the proxy's own loop: warm-up (compilation included), then
three timed windows of 20 steps under the exclusive device lock; tokens/s is their median, spread their
(max - min) / median. MFU is training FLOPs (3x the cost model's forward FLOPs per token at the run's length) times
tokens/s over the H100/H200 bf16 dense peak (989 TFLOP/s). Long rows keep the tokens per batch (16 x 1024) at
T 4096 and 8192.

Before its run, each compiled row checks on its first batch that the compiled model gives the eager model's loss and
gradients, and a two-layer copy of the architecture is traced whole (`torch._dynamo.explain`) for graph breaks.
(Under `step-graph` that check compiles the regions in the default mode; the whole step's graph is the proxy run's.)

    PYTHONUNBUFFERED=1 python benchmarks/proxy_hybrids.py --out results.json                 # every row
    PYTHONUNBUFFERED=1 python benchmarks/proxy_hybrids.py --parts long --out long.json       # the T4096 and T8192 rows
    PYTHONUNBUFFERED=1 python benchmarks/proxy_hybrids.py --parts compiled --only h3 --compile-modes default,reduce-overhead
                                                     # each compiled row once per torch.compile mode, side by side
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time

import torch

from archsearch import Architecture, BlockSpec, LayerSpec
from archsearch.model import build_model
from archsearch.proxy import ProxySettings, run_proxy
from archsearch.proxy.train import COMPILE_MODES, torch_compile_mode

D, N = 512, 16
DEVICE = "cuda"
PEAK_FLOPS = 989e12  # H100 / H200 SXM dense bf16
TOKENS_PER_BATCH = 16 * 1024
STEPS = 68  # warm-up of 6, three windows of 20, two steps after them


def stack(mixers: list[str], channels: list[str | None] | None = None, **params) -> Architecture:
    channels = channels or ["glu"] * len(mixers)
    layers = []
    for m, c in zip(mixers, channels, strict=True):
        mp = {k: v for k, v in params.items() if k in BlockSpec.make(m, {}, D).fam.params}
        cp = {k: v for k, v in params.items() if c and k in BlockSpec.make(c, {}, D).fam.params}
        layers.append(LayerSpec(BlockSpec.make(m, mp, D), BlockSpec.make(c, cp, D) if c else None))
    return Architecture(D, tuple(layers))


TWO_ATTENTION = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]  # layers 1 and 8 attention, as the seeds have it
ARCHS = {
    "transformer": stack(["attn"] * N, heads=8),
    "swa (window 512)": stack(["swa"] * N, heads=8, window=512),
    "deltanet": stack(["deltanet"] * N, heads=8),
    "h3": stack(["h3"] * N),
    "hyena": stack(["hyena"] * N),
    "gau (32 layers, no MLP)": stack(["gau"] * (2 * N), [None] * (2 * N)),
    "brt (8 layers)": stack(["brt"] * (N // 2), heads=8),  # its cell holds 16 d^2 weights: 8 layers match the others' size
    "moe (switch, 8 experts)": stack(["attn"] * N, ["glu", "moe"] * (N // 2), heads=8, experts=8),
    "deltanet + swa alternating": stack(["deltanet", "swa"] * (N // 2), heads=8, window=512),
    "deltanet + 2 attention": stack(["attn" if a else "deltanet" for a in TWO_ATTENTION], heads=8),
    "h3 + 2 attention": stack(["attn" if a else "h3" for a in TWO_ATTENTION], heads=8),
}
LONG = ("transformer", "deltanet", "h3", "hyena")


def check(arch: Architecture, seq_len: int, batch: int, mode: str) -> dict:
    """Graph breaks of a two-layer copy traced whole, and the compiled model's loss and gradients against the eager
    model's on one batch (bf16 autocast, as the proxy trains). Both bf16 gradients are also measured against the eager
    model's in float32: a compiled error near the eager one is bf16 rounding, a much larger one a defect."""
    small = dataclasses.replace(arch, layers=arch.layers[:2])
    x = torch.randint(0, 256, (batch, seq_len), device=DEVICE)
    with torch.autocast(DEVICE, torch.bfloat16, enabled=DEVICE == "cuda"):
        explained = torch._dynamo.explain(build_model(small).to(DEVICE))(x[:2], x[:2])
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(arch).to(DEVICE)

    def loss_and_grads(bf16: bool = True):
        model.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE, torch.bfloat16, enabled=bf16 and DEVICE == "cuda"):
            loss = model(x, x).loss
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])

    def error(grads: torch.Tensor, want: torch.Tensor) -> float:
        return ((grads - want).norm() / want.norm()).item()

    _, grads_fp32 = loss_and_grads(bf16=False)
    loss, grads = loss_and_grads()
    model.compile_regions(fullgraph=True, dynamic=False, mode=torch_compile_mode(mode))
    start = time.perf_counter()
    torch.compiler.cudagraph_mark_step_begin()
    loss_c, grads_c = loss_and_grads()
    seconds = time.perf_counter() - start
    return {"graph_breaks": explained.graph_break_count, "loss_eager": loss, "loss_compiled": loss_c,
            "grad_rel_err": error(grads_c, grads), "eager_vs_fp32": error(grads, grads_fp32),
            "compiled_vs_fp32": error(grads_c, grads_fp32), "check_compile_s": seconds}


def run(name: str, arch: Architecture, compiled: bool, seq_len: int, mode: str = "default") -> dict:
    batch = TOKENS_PER_BATCH // seq_len
    row = {"name": name, "summary": arch.summary(), "compiled": compiled, "seq_len": seq_len, "batch": batch, "compile_mode": mode}
    try:
        if compiled:
            row.update(check(arch, seq_len, batch, mode))
        settings = ProxySettings(tokens=STEPS * TOKENS_PER_BATCH, batch_size=batch, seq_len=seq_len, compile=compiled,
                                 compile_mode=mode, evals=1, eval_tokens=2 * TOKENS_PER_BATCH, timing_steps=20, device=DEVICE)
        m = run_proxy(arch, settings)
        flops = 3 * arch.cost(context=seq_len).flops_per_token
        row.update(status=m.status, reason=m.reason, params=m.params, bpb=m.bits_per_byte, tokens_per_s=m.train_tokens_per_s,
                   spread=m.train_tokens_per_s_spread, timing_note=m.timing_note, ran_compiled=m.compiled,
                   compile_s=m.compile_seconds, compile_error=m.compile_error, peak_gib=(m.peak_memory_bytes or 0) / 2**30,
                   wall_s=m.wall_seconds, mfu=flops * m.train_tokens_per_s / PEAK_FLOPS if m.train_tokens_per_s else None)
    except Exception as e:  # noqa: BLE001 - a broken family must not hide the others' numbers
        row.update(status="error", reason=f"{type(e).__name__}: {e}"[:300])
    torch._dynamo.reset()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return row


def plan(parts: list[str], modes: list[str] = ("default",), long_lens: tuple[int, ...] = (4096, 8192)) -> list[tuple[str, bool, int, str]]:
    """The rows, most wanted first: the compiled Transformer (the reference, in each torch.compile mode), every
    compiled row at T1024, the long rows (each beside the compiled Transformer at its length), then the eager rows.
    A compiled row runs once per mode, the modes of one architecture and length next to each other."""
    rows = {"compiled": [(n, True, 1024) for n in ARCHS], "long": [(n, True, t) for t in long_lens for n in LONG],
            "eager": [(n, False, 1024) for n in ARCHS]}
    todo = list(dict.fromkeys([("transformer", True, 1024)] + [r for part in parts for r in rows[part]]))
    return [(n, c, t, m) for n, c, t in todo for m in (modes if c else ("default",))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="compiled,long,eager", help="comma-separated: compiled, long, eager")
    ap.add_argument("--only", default="", help="comma-separated name prefixes to run (the reference always runs)")
    ap.add_argument("--out", default="proxy_hybrids.json")
    ap.add_argument("--skip", default="", help="comma-separated name prefixes not to run")
    ap.add_argument("--budget-s", type=float, default=float("inf"), help="start no row after this many seconds")
    ap.add_argument("--long-lens", default="4096,8192", help="comma-separated sequence lengths of the long rows")
    ap.add_argument("--profile", default="", help="comma-separated names or unique name prefixes (gau): the GPU kernels of a compiled step at T1024")
    ap.add_argument("--compile-modes", default=ProxySettings().compile_mode, help="comma-separated torch.compile modes, each compiled row run in "
                    f"each: {', '.join(COMPILE_MODES)}")
    args = ap.parse_args()
    modes = args.compile_modes.split(",")
    profiles = [profiled(p) for p in filter(None, args.profile.split(","))]  # a bad name fails before the rows run
    if unknown := [m for m in modes if m not in COMPILE_MODES]:
        ap.error(f"--compile-modes: expected modes among {', '.join(COMPILE_MODES)}, got {', '.join(unknown)}")
    start = time.perf_counter()
    rows = []
    device_name = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    todo = plan(args.parts.split(","), modes, tuple(int(t) for t in args.long_lens.split(",")))
    for name, compiled, t, mode in todo:
        if args.only and not any(name.startswith(p) for p in args.only.split(",")) and not (name == "transformer" and t == 1024 and compiled):
            continue
        if args.skip and any(name.startswith(p) for p in args.skip.split(",")):
            continue
        if time.perf_counter() - start > args.budget_s:
            print(f"budget spent: skipped {name} (T{t}, {mode if compiled else 'eager'})", flush=True)
            continue
        rows.append(run(name, ARCHS[name], compiled, t, mode))
        print(json.dumps(rows[-1]), flush=True)
        with open(args.out, "w") as f:
            json.dump({"device": device_name, "torch": torch.__version__, "rows": rows}, f, indent=1)
    print(table(rows, device_name))
    for name in profiles:
        print(f"\n### {name}, compiled, one training step at 16 x 1024: GPU kernels per step ({PROFILED_STEPS} steps profiled)")
        print(profile(ARCHS[name]))


def profiled(name: str) -> str:
    """The architecture `name` means: itself, else the one name it begins ("gau" for "gau (32 layers, no MLP)")."""
    if name in ARCHS:
        return name
    if len(matches := [n for n in ARCHS if n.startswith(name)]) != 1:
        raise SystemExit(f"--profile: {name!r} names {'none' if not matches else ', '.join(matches)}; expected one of {', '.join(ARCHS)}")
    return matches[0]


KERNEL_KINDS = (  # first match wins; Inductor names its generated kernels triton_{poi,red,per}_fused_...
    ("matmul (cuBLAS, CUTLASS)", re.compile(r"gemm|cutlass|nvjet|cublas|sm\d\d_xmma|splitK", re.I)),
    ("attention (flash / SDPA)", re.compile(r"flash|fmha|attention", re.I)),
    ("Inductor-generated (norms, glue, casts)", re.compile(r"^triton_")),
    ("archsearch Triton kernels", re.compile(r"_kernel$")),
    ("other (copies, aten, cuFFT)", re.compile(r"")),
)
PROFILED_STEPS = 3
ANNOTATIONS = ("##", "CompiledFunction", "ProfilerStep")


def profile(arch: Architecture, seq_len: int = 1024) -> str:
    """What holds a compiled model back: its kernels' GPU time per training step (forward, backward; the optimizer
    is the same for every family of one size), by kind and then the largest ones."""
    torch.manual_seed(0)
    model = build_model(arch).to(DEVICE)
    model.compile_regions(fullgraph=True, dynamic=False)
    x = torch.randint(0, 256, (TOKENS_PER_BATCH // seq_len, seq_len), device=DEVICE)

    def step():
        with torch.autocast(DEVICE, torch.bfloat16):
            model(x, x).loss.backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(PROFILED_STEPS):
            step()
        torch.cuda.synchronize()
    # annotations (Inductor's "## Call CompiledFxGraph ##", autograd's CompiledFunction) span kernels: not counted twice
    kernels = sorted(((e, e.self_device_time_total / 1e3 / PROFILED_STEPS) for e in prof.key_averages()  # (event, ms per step)
                      if e.device_type == torch.autograd.DeviceType.CUDA and e.self_device_time_total > 0
                      and not e.key.startswith(ANNOTATIONS)), key=lambda em: -em[1])
    total_ms = sum(ms for _, ms in kernels)
    by_kind: dict[str, float] = {}
    for e, ms in kernels:
        kind = next(k for k, pattern in KERNEL_KINDS if pattern.search(e.key))
        by_kind[kind] = by_kind.get(kind, 0.0) + ms
    lines = [f"GPU kernel time {total_ms:.2f} ms per step (forward + backward)", "| kind | ms/step | share |", "| --- | --- | --- |"]
    lines += [f"| {k} | {ms:.2f} | {ms / total_ms:.0%} |" for k, ms in sorted(by_kind.items(), key=lambda kv: -kv[1])]
    lines += ["", "| kernel | calls/step | ms/step | share |", "| --- | --- | --- | --- |"]
    lines += [f"| {e.key[:90]} | {e.count // PROFILED_STEPS} | {ms:.3f} | {ms / total_ms:.1%} |" for e, ms in kernels[:14]]
    torch._dynamo.reset()
    return "\n".join(lines)


def table(rows: list[dict], device_name: str) -> str:
    """Markdown: each row beside the compiled Transformer in the same torch.compile mode (eager rows: the default
    mode), at its length and at T1024, from the same run."""
    ref = {(r["seq_len"], r.get("compile_mode", "default")): r["tokens_per_s"] for r in rows
           if r["name"] == "transformer" and r.get("ran_compiled") and r.get("tokens_per_s")}
    lines = [f"{device_name}, torch {torch.__version__}; {TOKENS_PER_BATCH:,} tokens per batch",
             "| architecture | T | mode | params | tok/s | spread | vs compiled transformer, same mode and T | vs its T1024 | MFU | compile s cold / warm | bits/byte | check |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        mode = ("compiled" if r.get("compile_mode", "default") == "default" else f"compiled, {r['compile_mode']}") if r["compiled"] else "eager"
        if r.get("status") != "ok" or not r.get("tokens_per_s"):
            why = (r.get("reason") or r.get("timing_note") or "")[:120]
            lines.append(f"| {r['name']} | {r['seq_len']} | {mode} | | {r.get('status')}: {why} | | | | | | | |")
            continue
        if r["compiled"] and not r["ran_compiled"]:
            mode = f"eager fallback ({r['compile_error'][:80]})"
        ref_mode = r.get("compile_mode", "default") if r["compiled"] else "default"
        same, base = ref.get((r["seq_len"], ref_mode)), ref.get((1024, ref_mode))
        check_ = (f"breaks {r['graph_breaks']}, loss {r['loss_compiled']:.4f} vs {r['loss_eager']:.4f}, grads {r['grad_rel_err']:.1e}"
                  f" (vs fp32: compiled {r['compiled_vs_fp32']:.1e}, eager {r['eager_vs_fp32']:.1e})"
                  if "graph_breaks" in r else "")
        cold = f"{r['check_compile_s']:.0f} / {r['compile_s'] or 0:.1f}" if "check_compile_s" in r else "-"
        vs_same, vs_base = (f"{r['tokens_per_s'] / x:.2f}x" if x else "-" for x in (same, base))
        lines.append(
            f"| {r['name']} | {r['seq_len']} | {mode} | {r['params'] / 1e6:.1f}M | {r['tokens_per_s']:,.0f} | {r['spread']:.1%} | "
            f"{vs_same} | {vs_base} | {r['mfu']:.1%} | {cold} | {r['bpb']:.3f} | {check_} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
