"""Compile a CPU call's Triton launches for sm90 (H100, H200) without a GPU, and report each config's shared memory.

Run as a script in a process whose kernels are not interpreted (TRITON_INTERPRET=0: tests/conftest.py turns the
interpreter on for the test process): `python tests/_sm90.py CASE HEAD_DIM` prints one JSON line per
compiled config, [kernel, config, shared bytes]. Each launch compiles (Triton's compiler and ptxas) and does not run;
an autotuned launch compiles every config its prune keeps, which is what the autotuner would time.
"""

from __future__ import annotations

import contextlib
import json
import sys

import torch
import triton.runtime.autotuner as autotuner
import triton.runtime.jit as jit
from triton.backends.compiler import GPUTarget
from triton.runtime import driver


class _Sm90:
    """A driver that says sm90 and launches nothing: enough for Triton to compile."""

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", 90, 32)


@contextlib.contextmanager
def compiled_for_sm90():
    """Inside: Triton launches compile for sm90 without running; yields the list of [kernel, config, shared bytes]."""
    seen: list[list] = []
    run, tuned_run = jit.JITFunction.run, autotuner.Autotuner.run
    active = driver._active  # not driver.active: that creates the CUDA driver, which a machine without a GPU lacks

    def compile_only(self, *args, grid, warmup, **kwargs):
        kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
        config = {k: v for k, v in kwargs.items() if k in ("num_warps", "num_stages") or k.startswith("B")}
        seen.append([self.fn.__name__, config, kernel.metadata.shared])
        return kernel

    def every_config(self, *args, warmup, **kwargs):
        self.warmup(*args, **kwargs)  # each config the prune keeps, compiled by compile_only

    driver.set_active(_Sm90())
    jit.JITFunction.run, autotuner.Autotuner.run = compile_only, every_config
    try:
        yield seen
    finally:
        jit.JITFunction.run, autotuner.Autotuner.run = run, tuned_run
        driver._active = active


def deltanet_chunk(head_dim: int) -> None:
    """The chunked delta rule's forward and backward, through its launchers (past the dispatcher's head-dim limit too)."""
    from archsearch.kernels.delta_rule import chunk

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 128, 2, head_dim, generator=g, dtype=torch.bfloat16) for _ in range(3))
    beta = torch.rand(1, 128, 2, generator=g, dtype=torch.bfloat16)
    o, _, (tm, w, h, vn) = chunk.chunk_delta_rule_fwd(q, k, v, beta, head_dim**-0.5, None, False, 64, True)
    chunk.chunk_delta_rule_bwd(q, k, v, beta, tm, w, h, vn, head_dim**-0.5, torch.randn_like(o), None, False)


def sliding_window_attention(head_dim: int) -> None:
    """The sliding-window attention's forward and backward ops."""
    from archsearch.kernels.attention import sliding_window as swa

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 256, 2, head_dim, generator=g, dtype=torch.bfloat16) for _ in range(3))
    o, lse = swa._attention_op(q, k, v, 64, head_dim**-0.5)
    swa._attention_backward_op(q, k, v, o, lse, torch.randn_like(o), 64, head_dim**-0.5)


CASES = {"deltanet_chunk": deltanet_chunk, "sliding_window_attention": sliding_window_attention}

if __name__ == "__main__":
    case, head_dim = sys.argv[1:]
    with compiled_for_sm90() as seen:
        CASES[case](int(head_dim))
    for row in seen:
        print(json.dumps(row))
