"""What the Triton kernels share: autotuning that steps aside under the interpreter (CPU tests), where timing configs
means nothing and each config would rerun the whole interpreted kernel."""

from __future__ import annotations

import inspect
import os

import triton

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Triton >= 3.2 can keep autotuning results in its on-disk cache, so each new trial process does not time the
# configs again
_CACHE_RESULTS = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}


def autotune(configs: list[triton.Config], key: list[str]):
    """triton.autotune on a GPU; under the interpreter the kernel is left as it is and runs `first(configs)`."""
    if INTERPRET:
        return lambda fn: fn
    return triton.autotune(configs=configs, key=key, **_CACHE_RESULTS)


def first(configs: list[triton.Config]) -> dict:
    """The launch arguments that a missing autotuner would have supplied: the first config's."""
    return dict(configs[0].kwargs) if INTERPRET else {}
