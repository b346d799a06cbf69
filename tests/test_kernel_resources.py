"""Every Triton kernel config a launch can pick fits an H100/H200 (sm90) at the head dims blocks allow.

No GPU needed: tests/_sm90.py compiles each launch of a CPU call for sm90 (Triton's compiler and ptxas) without
running it, every config an autotuner would time included, in a child process whose kernels are not interpreted. A
config over sm90's shared memory fails on the GPU with OutOfResources; where every config of a kernel is over, the
launch fails: DeltaNet at head dim 192 did, in a width sweep at d_model 768 with 4 heads, when its Triton kernel
still took head dims up to 256.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SM90_SHARED_BYTES = 232_448  # the most shared memory one block may hold on sm90
HARNESS = Path(__file__).with_name("_sm90.py")
pytestmark = pytest.mark.xdist_group("sm90")  # one worker compiles them all: the Triton cache is then shared


def compiled(case: str, head_dim: int) -> list[tuple[str, dict, int]]:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, str(HARNESS), case, str(head_dim)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [tuple(json.loads(line)) for line in done.stdout.splitlines()]


def over(seen: list[tuple[str, dict, int]]) -> list[str]:
    return [f"{name} {config}: {shared:,} bytes" for name, config, shared in seen if shared > SM90_SHARED_BYTES]


@pytest.mark.parametrize("head_dim", [64, 96, 128])
def test_every_deltanet_chunk_config_fits_sm90_shared_memory(head_dim):
    from archsearch.kernels.delta_rule.chunk import MAX_HEAD_DIM

    assert head_dim <= MAX_HEAD_DIM  # the dispatcher sends these to the kernels
    seen = compiled("deltanet_chunk", head_dim)
    assert {"_fwd_prepare_kernel", "_fwd_state_kernel", "_bwd_state_kernel"} <= {name for name, _, _ in seen}
    assert not over(seen)


@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_every_sliding_window_attention_config_fits_sm90_shared_memory(head_dim):
    seen = compiled("sliding_window_attention", head_dim)
    assert {name for name, _, _ in seen} == {"_fwd_kernel", "_delta_kernel", "_dkdv_kernel", "_dq_kernel"}
    assert not over(seen)


def test_the_check_sees_configs_over_sm90_shared_memory():
    """The check can fail: at head dim 256, past the dispatcher's limit, every config of the state loops is over, as
    on the H200 (OutOfResources: 327,680 bytes required)."""
    seen = compiled("deltanet_chunk", 256)
    state = [(name, shared) for name, _, shared in seen if name in ("_fwd_state_kernel", "_bwd_state_kernel")]
    assert len(state) == 6 and all(shared > SM90_SHARED_BYTES for _, shared in state)
