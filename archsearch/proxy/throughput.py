"""Timing that concurrent trials cannot contaminate, and inference speed.

Several trials may share one GPU. Training steps (and each batch of an evaluation) hold a shared lock on
the physical device, kept from step to step until a timer waits, and synchronise the device before they release it,
so no kernel of theirs is still running when they let go; a trial that times itself takes the exclusive lock once
for all its windows (each hand-over drains every other trial's queued steps), so the others pause between their steps
for the few seconds it measures, then go on. A turnstile keeps a stream of shared holders from starving the timer. The
locks are files, so they work across the processes Ray starts; on a crash the kernel releases them.

`TimingWindows` says which training steps are timed: a few windows of consecutive steps after warm-up and
compilation, each timed on its own; the rate is their median, the spread (max - min) / median says how far to trust
it.
"""

from __future__ import annotations

import fcntl
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import torch

WINDOWS = 3  # timed windows per run: a median needs three


class TimingWindows:
    """`count` windows of `size` consecutive training steps each, from step `first` (steps count from 1).

    The training loop asks `starts(step)` / `ends(step)` around each step, calls `start()` after synchronising the
    device at a window's start and `stop()` after synchronising at its end (`pause()` and `resume()` around an
    evaluation inside a window); `rate(tokens_per_step)` gives the median
    tokens/s over the finished windows and their spread. A window cut short (a wall-clock budget, an error) is never
    counted. `clock` is injectable for tests.
    """

    def __init__(self, first: int, size: int, count: int = WINDOWS, clock: Callable[[], float] = time.perf_counter) -> None:
        if first < 1 or size < 1 or count < 1:
            raise ValueError(f"TimingWindows: first, size and count must be positive, got {first}, {size}, {count}")
        self.first, self.size, self.count, self.clock = first, size, count, clock
        self.seconds: list[float] = []
        self._started: float | None = None
        self._paused = 0.0  # seconds the current window spent paused

    @classmethod
    def plan(cls, steps: int, size: int, count: int = WINDOWS, clock: Callable[[], float] = time.perf_counter) -> TimingWindows | None:
        """Windows at the end of a warm-up of max(5, steps / 10) steps (compilation included), or None when `steps`
        cannot hold the warm-up and every window."""
        first = max(5, steps // 10) + 1
        if first - 1 + size * count > steps:
            return None
        return cls(first, size, count, clock)

    @property
    def last(self) -> int:
        return self.first + self.size * self.count - 1

    def inside(self, step: int) -> bool:
        return self.first <= step <= self.last

    def starts(self, step: int) -> bool:
        return self.inside(step) and (step - self.first) % self.size == 0

    def ends(self, step: int) -> bool:
        return self.inside(step) and (step - self.first + 1) % self.size == 0

    def start(self) -> None:
        self._started, self._paused = self.clock(), 0.0

    def pause(self) -> None:
        """Stop the clock inside a window (an evaluation that falls in it), after synchronising the device."""
        if self._started is None:
            raise RuntimeError("TimingWindows.pause outside a window")
        self._paused -= self.clock()

    def resume(self) -> None:
        self._paused += self.clock()

    def stop(self) -> None:
        if self._started is None:
            raise RuntimeError("TimingWindows.stop without start")
        self.seconds.append(self.clock() - self._started - self._paused)
        self._started = None

    def rate(self, tokens_per_step: int) -> tuple[float, float] | None:
        """(median tokens/s over the finished windows, (max - min) / median), or None before all windows finished."""
        if len(self.seconds) < self.count:
            return None
        rates = [self.size * tokens_per_step / s for s in self.seconds]
        median = statistics.median(rates)
        return median, (max(rates) - min(rates)) / median

    def missing(self) -> str:
        """Why `rate` is None ("" when it is not)."""
        if len(self.seconds) >= self.count:
            return ""
        return (
            f"stopped after {len(self.seconds)} of {self.count} timed windows of {self.size} steps "
            f"(steps {self.first}-{self.last})"
        )


def physical_device(device: torch.device | str) -> str:
    """A name for the physical device behind `device`, the same in every process: a CUDA device's UUID (processes
    that see different CUDA_VISIBLE_DEVICES still agree), else its type and index ("cuda" means the current one)."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type if device.index is None else f"{device.type}{device.index}"
    index = torch.cuda.current_device() if device.index is None else device.index
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return f"cuda-{uuid}" if uuid is not None else f"cuda{index}"


class DeviceLock:
    """A reader-writer lock per device, shared by every process on the machine.

    A shared holder keeps its lock from one step to the next (a lease) rather than taking and releasing it around
    each: it lets go, after synchronising its device, only when a timer waits at the turnstile (probed without
    blocking after each step), or when the caller says it leaves the device (`release`: before host-side work such
    as reporting, so no timer waits on it). So trials sharing a GPU queue their kernels asynchronously, and a timer
    still finds none of their kernels running."""

    def __init__(self, device: torch.device | str, folder: str | None = None) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        name = physical_device(self.device)
        folder = folder or os.environ.get("ARCHSEARCH_LOCK_DIR", tempfile.gettempdir())
        self._main = open(os.path.join(folder, f"archsearch-{name}.lock"), "a+")  # noqa: SIM115 (held for the lock's life)
        self._turnstile = open(os.path.join(folder, f"archsearch-{name}.turnstile"), "a+")  # noqa: SIM115
        self.holding = False  # whether this holder keeps the shared lock between its steps
        self.timing = False  # whether this holder is inside `exclusive` (its own steps and evaluations need no more)
        self.waited = 0.0  # seconds spent blocked taking the lock (others' timed windows; a timer waiting for steps)

    @contextmanager
    def shared(self, keep: bool = True):
        """Around one training step (or an evaluation batch): many trials may hold it at once. Taken if this holder does
        not hold it already; afterwards kept (`keep`, for the next step) unless a timer waits: then the device is
        synchronised and the lock released, so the timer finds none of this holder's kernels running.
        Inside this holder's own `exclusive` it takes nothing: a flock on the same file would convert the exclusive
        lock to a shared one and give the rest of the timed window away."""
        if self.timing:
            yield
            return
        if not self.holding:
            start = time.perf_counter()
            fcntl.flock(self._turnstile, fcntl.LOCK_SH)
            fcntl.flock(self._main, fcntl.LOCK_SH)
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)
            self.waited += time.perf_counter() - start
            self.holding = True
        try:
            yield
        finally:
            if not keep or self.timer_waiting():
                self.release()

    def timer_waiting(self) -> bool:
        """Whether a timer holds the turnstile (it waits for the shared holders, or times)."""
        try:
            fcntl.flock(self._turnstile, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        return False

    def release(self) -> None:
        """Let go of the shared lock if held, after synchronising the device (its kernels finish first)."""
        if not self.holding:
            return
        try:
            synchronize(self.device)
        finally:
            fcntl.flock(self._main, fcntl.LOCK_UN)
            self.holding = False

    @contextmanager
    def exclusive(self):
        """Around a timed window: waits for steps in flight, and holds new ones back until it is done. The holder's
        own shared lease is given up and its queued work drained on entry, so the window starts idle."""
        self.release()
        start = time.perf_counter()
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._main, fcntl.LOCK_EX)
            self.waited += time.perf_counter() - start
            self.timing = True
            try:
                synchronize(self.device)
                yield
            finally:
                self.timing = False
                fcntl.flock(self._main, fcntl.LOCK_UN)
        finally:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
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
        # the timed call first, twice, untimed: a compiled model compiles for this shape without targets (and under
        # CUDA graphs records them) here, not inside the timed window
        for _ in range(2):
            model(idx)
        with lock.exclusive() if lock else nullcontext():
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
