"""How busy the study kept its GPUs: the share of the wall time during which a kernel ran, from NVML.

NVML's utilisation rate is "the percent of time over the past sample period during which one or more kernels was
executing" (its period is 1/6 s to 1 s, by product). The driver polls it for the GPUs its node shows it
(CUDA_VISIBLE_DEVICES, by index or UUID) in a background thread while the trials run; the busy share of a GPU is the
mean of its samples. A GPU that runs tiny kernels back to back counts as busy: this is occupancy in time, not of
the multiprocessors. Trials on other nodes of a cluster are not sampled (each node would need its own sampler).

Under NVIDIA's Multi-Process Service (MPS) the kernels of several trials run at once; without it the trials sharing
a GPU take turns on it. `mps_hint` says so when a study shares GPUs without MPS running.

Beside the share, a session keeps its busy share second by second (`series`, in coarser buckets for a session
of over a day), and `idle_attribution` lays that series over the trials' timelines (each trial's start, set-up,
first compiled step, exclusive timing hold and end: `Metrics.started_at` and its neighbours) to say what the
trials were doing while the GPU idled.

NVML comes from the `nvidia-ml-py` package (`pip install 'archsearch[gpu]'`); without it, or without a GPU, nothing
is measured and `GpuBusy.line()` says so once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from types import ModuleType
from typing import Any, NamedTuple

INTERVAL = 0.2  # seconds between samples: near NVML's own period, so the samples cover most of the time
MAX_BUCKETS = 86_400  # of the per-second series: a longer session merges neighbouring buckets (2 s, 4 s, ...)


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
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self.nvml, self.interval, self.clock, self.wall_clock = nvml, interval, clock, wall_clock
        self.handles = visible_handles(nvml, visible) if nvml is not None else {}
        self.totals = dict.fromkeys(self.handles, 0.0)
        self.samples = 0
        self.started: float | None = None
        self.started_at: float | None = None  # Unix time of start(), where the trials' timelines are placed
        self.seconds = 0.0
        self.bucket_seconds = 1
        self.buckets: list[list[float]] = []  # [sum of the GPUs' mean readings, readings] per bucket since start()
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
        reading = 0.0
        for name, handle in self.handles.items():
            with suppress(self.nvml.NVMLError):
                value = self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
                self.totals[name] += value
                reading += value / len(self.handles)
        self.samples += 1
        self._add_to_series(reading)

    def _add_to_series(self, reading: float) -> None:
        index = 0 if self.started is None else max(0, int((self.clock() - self.started) // self.bucket_seconds))
        while index >= MAX_BUCKETS:  # halve the resolution rather than grow without bound
            self.buckets = [[a[0] + b[0], a[1] + b[1]] for a, b in zip(self.buckets[::2], self.buckets[1::2] + [[0.0, 0]], strict=False)]
            self.bucket_seconds *= 2
            index //= 2
        self.buckets.extend([0.0, 0] for _ in range(index + 1 - len(self.buckets)))
        self.buckets[index][0] += reading
        self.buckets[index][1] += 1

    def start(self) -> GpuBusy:
        self.started, self.started_at = self.clock(), self.wall_clock()
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
        started_at = self.started_at if self.started_at is not None else self.wall_clock() - self.seconds
        return {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started_at)), "started_at": round(started_at, 2),
                "wall_seconds": round(self.seconds, 1), "samples": self.samples,
                "busy_share": {n: round(s, 4) for n, s in self.share().items()},
                "mean_busy_share": None if mean is None else round(mean, 4),
                "bucket_seconds": self.bucket_seconds,
                "series": [round(total / n, 3) if n else None for total, n in self.buckets]}


# what the trials were doing in a bucket of the series, the first that applies
ACTIVITIES = (
    ("before the first trial", "the driver's start: Ray, the first workers"),
    ("after the last trial", "the driver's end"),
    ("between trials", "no trial running: hand-overs between a trial and the next"),
    ("a timed window", "one trial holds the exclusive lock: it runs alone"),
    ("set-up and compile", "every running trial is before its first step or compiling it"),
    ("the tail", "fewer trials running than the concurrency, none left to start"),
    ("training", "trials training beside each other"),
)


class _Span(NamedTuple):
    """One run on the wall clock (Unix seconds): its start, end, first training step, and exclusive hold if timed."""

    start: float
    end: float
    first_step: float
    window: tuple[float, float] | None


def idle_attribution(record: Mapping[str, Any], trials: Iterable[Mapping[str, Any]], concurrency: int) -> list[dict[str, Any]]:
    """Each activity of `ACTIVITIES` with the wall seconds of the busy record's series it covers, the GPU's busy
    share then, and the idle seconds (wall x (1 - busy)). `trials`: the rows of the trials that ran in this
    session (`started_at`, `wall_seconds`, `setup_seconds`, `compile_seconds`, `exclusive_from_s`,
    `exclusive_until_s`); rows that started before the session (a resumed study's) are left out, and rows that
    share a start (a result served from the cache) count once."""
    spans: dict[float, _Span] = {}
    for row in trials:
        start, wall = _number(row.get("started_at")), _number(row.get("wall_seconds"))
        if start is None or wall is None or start in spans or start < record["started_at"]:
            continue
        first_step = start + (_number(row.get("setup_seconds")) or 0.0) + (_number(row.get("compile_seconds")) or 0.0)
        held = (_number(row.get("exclusive_from_s")), _number(row.get("exclusive_until_s")))
        window = (start + held[0], start + held[1]) if None not in held else None
        spans[start] = _Span(start, start + wall, first_step, window)
    ordered = sorted(spans.values())  # by start
    last_end = max((s.end for s in ordered), default=None)
    width = record.get("bucket_seconds", 1)
    totals = {name: [0.0, 0.0] for name, _ in ACTIVITIES}  # wall seconds, busy seconds
    for i, busy in enumerate(record.get("series") or []):
        if busy is None:
            continue
        entry = totals[_activity(record["started_at"] + (i + 0.5) * width, ordered, last_end, concurrency)]
        entry[0] += width
        entry[1] += width * busy
    return [{"activity": name, "why": why, "wall_seconds": totals[name][0],
             "busy_share": totals[name][1] / totals[name][0] if totals[name][0] else None,
             "idle_seconds": totals[name][0] - totals[name][1]} for name, why in ACTIVITIES]


def _activity(t: float, spans: list[_Span], last_end: float | None, concurrency: int) -> str:
    """What the runs `spans` (in order of their start, the last ending at `last_end`) were doing at time t: the first
    of `ACTIVITIES` that applies."""
    if not spans or t < spans[0].start:
        return "before the first trial"
    if t >= last_end:
        return "after the last trial"
    running = [s for s in spans if s.start <= t < s.end]
    if not running:
        return "between trials"
    if any(s.window is not None and s.window[0] <= t < s.window[1] for s in running):
        return "a timed window"
    if all(t < s.first_step for s in running):
        return "set-up and compile"
    if len(running) < concurrency and t > spans[-1].start:
        return "the tail"
    return "training"


def idle_line(attribution: list[dict[str, Any]]) -> str:
    """"idle 47 s: 18 s before the first trial, 12 s a timed window, ..." (the activities with an idle second)."""
    parts = [(a["idle_seconds"], a["activity"]) for a in attribution if a["idle_seconds"] >= 0.5]
    total = sum(a["idle_seconds"] for a in attribution)
    return f"idle {total:.0f} s: " + ", ".join(f"{s:.0f} s {name}" for s, name in sorted(parts, reverse=True)) if parts else ""


def _number(value: Any) -> float | None:
    """A float from a table cell (NaN and missing: None)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number
