"""How busy the study kept its GPUs: the share of the wall time during which a kernel ran, from NVML.

NVML's utilisation rate is "the percent of time over the past sample period during which one or more kernels was
executing" (its period is 1/6 s to 1 s, by product). The driver polls it for the GPUs its node shows it
(CUDA_VISIBLE_DEVICES, by index or UUID) in a background thread while the trials run; the busy share of a GPU is the
mean of its samples. A GPU that runs tiny kernels back to back counts as busy: this is occupancy in time, not of
the multiprocessors. Trials on other nodes of a cluster are not sampled (each node would need its own sampler).

Under NVIDIA's Multi-Process Service (MPS) the kernels of several trials run at once; without it the trials sharing
a GPU take turns on it. `mps_hint` says so when a study shares GPUs without MPS running.

NVML comes from the `nvidia-ml-py` package (`pip install 'archsearch[gpu]'`); without it, or without a GPU, nothing
is measured and `GpuBusy.line()` says so once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from types import ModuleType
from typing import Any

INTERVAL = 0.2  # seconds between samples: near NVML's own period, so the samples cover most of the time


MPS_PIPE_DIRECTORY = "/tmp/nvidia-mps"  # the MPS control daemon's default, unless CUDA_MPS_PIPE_DIRECTORY says otherwise


def mps_running(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether an MPS control daemon listens where this process's CUDA clients would look for it."""
    return os.path.exists(os.path.join(environ.get("CUDA_MPS_PIPE_DIRECTORY", MPS_PIPE_DIRECTORY), "control"))


def mps_hint(gpu_share: float, environ: Mapping[str, str] = os.environ) -> str | None:
    """The line a study on shared GPUs prints when no MPS daemon runs on the driver's node, or None."""
    if not 0 < gpu_share < 1 or mps_running(environ):
        return None
    return (f"{int(1 // gpu_share)} trials share each GPU and MPS is not running, so their kernels take turns; "
            "`nvidia-cuda-mps-control -d` before the study lets them run at once (on an H200 with 8, the trials after the "
            "first wave took 25% less time; docs/studies.md)")


def load_nvml() -> ModuleType | None:
    """NVML's Python binding, initialised, or None where it or a GPU is missing."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    return pynvml


def visible_handles(nvml: ModuleType, visible: str | None) -> dict[str, Any]:
    """NVML handles of the GPUs this process may use, by name ("cuda0" ... in CUDA's numbering): all of them, or
    the ones CUDA_VISIBLE_DEVICES lists (indices or UUIDs), in its order."""
    if visible is None:
        entries: list[str] = [str(i) for i in range(nvml.nvmlDeviceGetCount())]
    else:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
    handles = {}
    for position, entry in enumerate(entries):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(int(entry)) if entry.isdigit() else nvml.nvmlDeviceGetHandleByUUID(entry)
        except nvml.NVMLError:
            break  # CUDA stops at the first entry it cannot use, and so do we
        handles[f"cuda{position}"] = handle
    return handles


class GpuBusy:
    """Samples the GPUs' utilisation between `start()` and `stop()`; `share()` is each GPU's busy share so far.
    `nvml` and `clock` are injectable (tests use a fake NVML and call `sample()` themselves)."""

    def __init__(self, nvml: ModuleType | None, visible: str | None = None, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.nvml, self.interval, self.clock = nvml, interval, clock
        self.handles = visible_handles(nvml, visible) if nvml is not None else {}
        self.totals = dict.fromkeys(self.handles, 0.0)
        self.samples = 0
        self.started: float | None = None
        self.seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        """A copy is a snapshot of the figures, which samples nothing: Ray Tune pickles its callbacks (the progress
        line holds `line`), and NVML's handles and the thread cannot travel."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("nvml", "handles", "_stop", "_thread")}
        return {**state, "nvml": None, "handles": {}, "_thread": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _stop=threading.Event())

    @classmethod
    def of_this_node(cls) -> GpuBusy:
        return cls(load_nvml(), os.environ.get("CUDA_VISIBLE_DEVICES"))

    @property
    def measuring(self) -> bool:
        return bool(self.handles)

    def sample(self) -> None:
        """One reading of every GPU (a GPU NVML cannot read this time counts as idle: an error is not busy)."""
        for name, handle in self.handles.items():
            with suppress(self.nvml.NVMLError):
                self.totals[name] += self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
        self.samples += 1

    def start(self) -> GpuBusy:
        self.started = self.clock()
        if self.measuring:
            self._thread = threading.Thread(target=self._run, name="archsearch-gpu-busy", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.started is not None:
            self.seconds = self.clock() - self.started

    def share(self) -> dict[str, float]:
        """Each GPU's busy share of the time sampled so far (empty before the first sample)."""
        if not self.samples:
            return {}
        return {name: total / self.samples for name, total in self.totals.items()}

    def mean(self) -> float | None:
        """The GPUs' mean busy share so far (None before the first sample)."""
        share = self.share()
        return sum(share.values()) / len(share) if share else None

    def line(self) -> str:
        """"GPU busy 87%" (with one figure per GPU when there are several), or "" before the first sample."""
        share, mean = self.share(), self.mean()
        if mean is None:
            return ""
        each = f" ({', '.join(f'{n} {s:.0%}' for n, s in share.items())})" if len(share) > 1 else ""
        return f"GPU busy {mean:.0%}{each}"

    def record(self) -> dict[str, Any]:
        """What the run directory keeps of this session (see `RunDir.add_busy_record`)."""
        mean = self.mean()
        return {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - self.seconds)),
                "wall_seconds": round(self.seconds, 1), "samples": self.samples,
                "busy_share": {n: round(s, 4) for n, s in self.share().items()},
                "mean_busy_share": None if mean is None else round(mean, 4)}
