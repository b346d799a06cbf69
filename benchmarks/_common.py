"""Shared pieces of the kernel benchmarks: timing, relative error, the device line and a markdown table."""

from __future__ import annotations

import datetime
import traceback
from collections.abc import Callable

import torch
import triton
from torch import Tensor

from archsearch import Architecture, BlockSpec, LayerSpec


def median_ms(fn: Callable[[], object], warmup: int = 25, rep: int = 100) -> float:
    """Median time of fn in ms, timed with CUDA events after warm-up (triton.testing.do_bench)."""
    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def kernel_profile(fn: Callable[[], object], reps: int = 5):
    """The profiler's per-kernel averages over `reps` calls of fn (after three warm-up calls), CUDA activity only."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    return prof.key_averages()


def kernel_table(fn: Callable[[], object], reps: int = 5, rows: int = 14) -> str:
    """fn's kernels by GPU time over `reps` calls: what limits it."""
    return kernel_profile(fn, reps).table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60)


def gpu_ms(fn: Callable[[], object], reps: int = 10) -> float:
    """GPU kernel time of one call of fn in ms (the profiler's device time, summed): the wall time without the
    host's share, which decides whenever launching takes longer than the kernels run."""
    return sum(e.self_device_time_total for e in kernel_profile(fn, reps)) / reps / 1e3


def relative(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b|| in float64; NaN anywhere gives inf."""
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def header(title: str) -> str:
    props = torch.cuda.get_device_properties(0)
    return (
        f"## {title}\n{props.name}, {props.multi_processor_count} SMs; torch {torch.__version__}, "
        f"triton {triton.__version__}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(x: object) -> str:
        return f"{x:.3g}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def attempt(fn: Callable[[], object], what: str) -> object | None:
    """fn(), or None after printing why it failed (one variant failing must not cost the run)."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 - any failure of one variant is reported and the run goes on
        print(f"FAILED {what}:\n{traceback.format_exc(limit=3)}", flush=True)
        torch.cuda.synchronize()
        return None


def width_family(d_model: int, layers: int = 8) -> Architecture:
    """benchmarks/width_space.yaml at one width: DeltaNet (4 heads), sliding-window attention (window 256) every
    other layer, glu channels."""
    specs = []
    for i in range(layers):
        mixer = BlockSpec.make("swa", {"window": 256}, d_model) if i % 2 else BlockSpec.make("deltanet", {"heads": 4}, d_model)
        specs.append(LayerSpec(mixer, BlockSpec.make("glu", {}, d_model)))
    return Architecture(d_model, tuple(specs))
