"""Timing that concurrent trials cannot contaminate, and inference speed.

Several trials may share one GPU. Training steps hold a shared lock on the device; a trial that times itself takes
the exclusive lock, so the others pause between their steps for the few seconds it measures, then go on. A
turnstile keeps a stream of shared holders from starving the timer. The locks are files, so they work across the
processes Ray starts; on a crash the kernel releases them.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from contextlib import contextmanager

import torch


class DeviceLock:
    """A reader-writer lock per device, shared by every process on the machine."""

    def __init__(self, device: torch.device | str, folder: str | None = None) -> None:
        name = str(device).replace(":", "")
        folder = folder or os.environ.get("ARCHSEARCH_LOCK_DIR", tempfile.gettempdir())
        self._main = open(os.path.join(folder, f"archsearch-{name}.lock"), "a+")  # noqa: SIM115 (held for the lock's life)
        self._turnstile = open(os.path.join(folder, f"archsearch-{name}.turnstile"), "a+")  # noqa: SIM115

    @contextmanager
    def shared(self):
        """Around one training step: many trials may hold it at once."""
        fcntl.flock(self._turnstile, fcntl.LOCK_SH)
        fcntl.flock(self._main, fcntl.LOCK_SH)
        fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._main, fcntl.LOCK_UN)

    @contextmanager
    def exclusive(self):
        """Around a timed window: waits for steps in flight, and holds new ones back until it is done."""
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._main, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._main, fcntl.LOCK_UN)
        finally:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)

    def close(self) -> None:
        self._main.close()
        self._turnstile.close()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def inference_speed(model, batch_size: int, seq_len: int, decode_tokens: int, vocab: int, device: torch.device, dtype: torch.dtype, lock: DeviceLock | None) -> dict[str, float]:
    """Prefill tokens/s (a forward over [B, T]) and decode tokens/s (steps through every block's state), timed exclusively."""
    model.eval()
    idx = torch.randint(0, vocab, (batch_size, seq_len), device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with autocast:
        model(idx[:, : min(seq_len, 16)])  # warm up kernels and caches
        with lock.exclusive() if lock else _null():
            synchronize(device)
            start = time.perf_counter()
            model(idx)
            synchronize(device)
            prefill = batch_size * seq_len / (time.perf_counter() - start)
            state = model.init_state(batch_size)
            token = idx[:, 0]
            logits, state = model.step(token, state)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(decode_tokens):
                logits, state = model.step(logits.argmax(-1), state)
            synchronize(device)
            decode = batch_size * decode_tokens / (time.perf_counter() - start)
    model.train()
    return {"prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode}


@contextmanager
def _null():
    yield
