"""Short-budget training and evaluation of one architecture: the numbers a trial turns into objectives."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import gc
import io
import json
import math
import os
import re
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from .._metric import Requirement, metric
from ..architecture import MAX_CONTEXT, Architecture
from ..curves import predicted_bits_per_byte
from ..errors import ArchsearchError
from ..model import HybridLM, build_model
from .data import Corpus, DataSpec, load_corpus
from .schedule import SCHEDULES, Schedule
from .tasks import TASKS, TaskSpec, accuracy
from .throughput import WINDOWS, DeviceLock, TimingWindows, inference_speed, synchronize

LN2 = math.log(2)


@dataclass(frozen=True)
class ProxySettings:
    """How a proxy trains and what it measures. Equal settings give comparable (and cacheable) results."""

    task: str = field(default="lm", metadata={"help": "lm, or a synthetic task: mqar, selective_copy, induction"})
    data: DataSpec = field(default_factory=DataSpec)  # for lm
    synthetic: TaskSpec | None = None  # for synthetic tasks (defaults from TaskSpec when None)
    seq_len: int = field(default=256, metadata={"help": "tokens per training sequence"})
    batch_size: int = field(default=16, metadata={"help": "sequences per step"})
    tokens: int = field(default=1_000_000, metadata={"help": "training budget in tokens"})
    seconds: float | None = field(default=None, metadata={"help": "wall-clock budget as well"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate"})
    lr_width: int | None = field(default=None, metadata={"help": "the d_model at which lr is the peak: a wider model peaks at lr * lr_width / d_model "
                                                                  "(Adam's stable rate falls with width); none: every width at lr"})
    schedule: Literal["wsd", "cosine", "constant"] = field(default="wsd", metadata={"help": "wsd (warm-up, stable, decay: runs of different budgets share a prefix), cosine or constant"})
    decay: float = field(default=0.2, metadata={"help": "wsd: share of the budget (of each rung's) spent decaying"})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final learning rate as a share of the peak"})
    warmup_tokens: int = field(default=131_072, metadata={"help": "warm-up in tokens, the same whatever the budget (at most a quarter of the first rung)"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay on matrices"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient norm clip"})
    evals: int = field(default=8, metadata={"help": "intermediate evaluations (the learning curve), the last one final"})
    eval_tokens: int = field(default=131_072, metadata={"help": "held-out tokens of the final evaluation, whatever the budget; intermediate ones use the first quarter"})
    compile: bool | Literal["auto"] = field(default="auto", metadata={"help": "true, false, or auto: compiled on CUDA, eager elsewhere"})
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "step-graph"] = field(
        default="step-graph", metadata={"help": "torch.compile's mode when compiled, or step-graph (the default): the layers "
                                                "compiled in the default mode and the whole training step (forward, backward, "
                                                "clip, optimizer) replayed as one CUDA graph, so the host's launches do not set "
                                                "the pace; reduce-overhead replays CUDA graphs of each compiled layer; off CUDA "
                                                "every mode runs as default"})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu, cuda, cuda:N"})
    seed: int = field(default=0, metadata={"help": "seed of the initialisation and the batches"})
    timing_steps: int = field(default=20, metadata={"help": "training steps per timed window (three windows, timed exclusively) for tokens/s; 0: not timed"})
    predict_tokens: int | None = field(default=None, metadata={"help": "extrapolate bits_per_byte to this budget (predicted_bits_per_byte)"})
    inference: bool = field(default=False, metadata={"help": "also measure prefill and decode tokens/s"})
    decode_tokens: int = field(default=64, metadata={"help": "tokens decoded when measuring decode tokens/s"})

    def __post_init__(self) -> None:
        compile_ = {"true": True, "false": False}.get(self.compile, self.compile) if isinstance(self.compile, str) else self.compile
        if compile_ not in (True, False, "auto"):
            raise ArchsearchError(f"compile: expected true, false or auto, got {self.compile!r}")
        object.__setattr__(self, "compile", compile_)
        if self.compile_mode not in COMPILE_MODES:
            raise ArchsearchError(f"compile_mode: expected one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.task != "lm" and self.task not in TASKS:
            raise ArchsearchError(f"task: unknown proxy task {self.task!r}; expected lm, {', '.join(TASKS)}")
        if self.schedule not in SCHEDULES:
            raise ArchsearchError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name, top in _INT_RANGES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL_INTS:
                continue
            low = _INT_LEAST.get(name, 1)
            if not low <= value <= top:
                raise ArchsearchError(f"{name}: expected a {'positive integer' if low else 'whole number'} of at most {top:,}, got {value:,}")
        for name, (low, high, low_open) in _FLOAT_RANGES.items():
            value = getattr(self, name)
            if value is None and name == "seconds":
                continue
            if not (math.isfinite(value) and (value > low if low_open else value >= low) and value <= high):
                raise ArchsearchError(f"{name}: expected a number {'above' if low_open else 'from'} {low:g} to {high:g}, got {value!r}")
        if not _DEVICE.fullmatch(self.device):
            raise ArchsearchError(f"device: unknown device {self.device!r}; expected auto, cpu, cuda or cuda:N")

    def key_data(self) -> dict[str, Any]:
        """The settings as result keys hash them: every field, less those added since results were first recorded
        while they are off, so that records, caches and checkpoints made before keep their keys."""
        data = dataclasses.asdict(self)
        for name, off in _KEYED_ONLY_WHEN_SET.items():
            if data[name] == off:
                del data[name]
        return data

    def for_width(self, d_model: int) -> ProxySettings:
        """The settings a model of this width trains with: lr_width folded into lr. A training's record is keyed by
        these, so a narrow model's run with lr_width and its run without one are one training, recorded once."""
        if self.lr_width is None:
            return self
        return dataclasses.replace(self, lr=self.lr * min(1.0, self.lr_width / d_model), lr_width=None)

    def task_spec(self) -> TaskSpec:
        return self.synthetic or TaskSpec(self.task, seq_len=self.seq_len)


COMPILE_MODES = typing.get_args(typing.get_type_hints(ProxySettings)["compile_mode"])
STEP_GRAPH = "step-graph"  # ours: the whole step captured as one CUDA graph (`_Steps`)
# what a mode falls back to when its CUDA graphs fail: the whole-step graph to torch's per-region graphs, those to none
WITHOUT_CUDA_GRAPHS = {STEP_GRAPH: "reduce-overhead", "reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}
TREE_MODES = ("reduce-overhead", "max-autotune")  # torch.compile's modes that replay CUDA graphs (CUDA graph trees)


def torch_compile_mode(mode: str) -> str:
    """torch.compile's mode for a proxy's `compile_mode`: step-graph compiles its regions in the default mode."""
    return "default" if mode == STEP_GRAPH else mode


_INT_RANGES = {"seq_len": MAX_CONTEXT, "batch_size": 1 << 16, "tokens": 1 << 50, "evals": 10_000, "warmup_tokens": 1 << 50,
               "eval_tokens": 1 << 40, "timing_steps": 100_000, "decode_tokens": MAX_CONTEXT, "predict_tokens": 1 << 60,
               "lr_width": 1 << 20}
_OPTIONAL_INTS = {"predict_tokens", "lr_width"}  # None: not asked for
_KEYED_ONLY_WHEN_SET = {"lr_width": None}  # settings added after results were recorded, and their value when off
_INT_LEAST = {"timing_steps": 0}  # least values other than 1 (timing_steps 0: not timed)
_FLOAT_RANGES = {"lr": (0.0, 1e6, True), "min_lr_ratio": (0.0, 1.0, False), "decay": (0.0, 1.0, False),  # (low, high, low open)
                 "weight_decay": (0.0, 100.0, False), "grad_clip": (0.0, 1e6, False), "seconds": (0.0, 1e9, True)}
_DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,3})?")

# what the settings must say for a metric to be measured (see archsearch.metrics)
LM_TASK = Requirement(lambda s: s.task == "lm", "the language-modelling proxy (proxy.task: lm)")
SYNTHETIC_TASK = Requirement(lambda s: s.task != "lm", "a synthetic proxy task (proxy.task: mqar, selective_copy or induction)")
INFERENCE = Requirement(lambda s: s.inference, "proxy.inference: true")
CUDA = Requirement(lambda s: s.device != "cpu", "a CUDA device (peak memory is measured on CUDA only)")
PREDICTS = Requirement(lambda s: s.task == "lm" and s.predict_tokens is not None, "proxy.predict_tokens (the budget to extrapolate to) and the language-modelling proxy")


@dataclass
class Metrics:
    """What one proxy run measured. status is ok, diverged, oom or error; figures not measured stay None."""

    status: str = "ok"
    reason: str = ""
    val_loss: float | None = field(default=None, metadata=metric(
        "minimize", "nats", "validation cross-entropy per token", label="validation loss", detail="{:.4f}"))
    perplexity: float | None = field(default=None, metadata=metric(
        "minimize", "ratio", "exp(validation loss)", detail="{:.3f}", requires=LM_TASK))
    bits_per_byte: float | None = field(default=None, metadata=metric(
        "minimize", "bits/byte", "validation loss in bits per byte of text", detail="{:.4f}", requires=LM_TASK))
    accuracy: float | None = field(default=None, metadata=metric(
        "maximize", "ratio", "share of the synthetic task's answers right", detail="{:.3f}", requires=SYNTHETIC_TASK))
    train_tokens_per_s: float | None = field(default=None, metadata=metric(
        "maximize", "tokens/s", "training tokens per second, timed exclusively", label="train tokens/s"))
    prefill_tokens_per_s: float | None = field(default=None, metadata=metric(
        "maximize", "tokens/s", "prompt tokens per second", label="prefill tokens/s", requires=INFERENCE))
    decode_tokens_per_s: float | None = field(default=None, metadata=metric(
        "maximize", "tokens/s", "generated tokens per second", label="decode tokens/s", requires=INFERENCE))
    peak_memory_bytes: int | None = field(default=None, metadata=metric(
        "minimize", "bytes", "peak CUDA memory of training", label="peak memory", requires=CUDA))
    params: int | None = None
    tokens_trained: int = field(default=0, metadata=metric(
        "maximize", "tokens", "tokens the proxy trained on", detail="{:,}", objective=False))
    wall_seconds: float = field(default=0.0, metadata=metric(
        "minimize", "seconds", "wall-clock time of the proxy run", label="wall time", detail="{:.1f} s", objective=False))
    device: str = ""
    corpus_digest: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    train_tokens_per_s_spread: float | None = field(default=None, metadata=metric(
        "minimize", "ratio", "(max - min) / median of training tokens/s over the timed windows",
        label="train tokens/s spread", detail="{:.1%}", objective=False))
    timing_note: str = field(default="", metadata=metric(
        None, "text", "why train_tokens_per_s was not measured, when it was not", objective=False))
    compiled: bool = False  # whether the training steps ran compiled (torch.compile, one graph per layer kind)
    # the run on a study's timeline (study/_busy.py lays the GPU's busy series over them): Unix time of its start,
    # and its exclusive timing hold in seconds after that (None: not timed)
    started_at: float | None = None
    exclusive_from_s: float | None = None
    exclusive_until_s: float | None = None
    compile_seconds: float | None = field(default=None, metadata=metric(
        "minimize", "seconds", "wall time of the first compiled step (tracing, Inductor, one step), and under step-graph of the step before the capture and the capture",
        detail="{:.1f} s", objective=False))
    setup_seconds: float | None = field(default=None, metadata=metric(
        "minimize", "seconds", "wall time before the first training step: data, model, optimizer, a checkpoint's state",
        detail="{:.1f} s", objective=False))
    eval_seconds: float = field(default=0.0, metadata=metric(
        "minimize", "seconds", "wall time of the run's evaluations (their compiles and lock waits included)",
        detail="{:.1f} s", objective=False))
    lock_wait_seconds: float = field(default=0.0, metadata=metric(
        "minimize", "seconds", "wall time spent waiting for the device lock: other trials' timed windows, or this run's "
        "windows waiting for their steps", detail="{:.1f} s", objective=False))
    compile_error: str = field(default="", metadata=metric(
        None, "text", "why a compile asked for fell back (a step graph not captured, CUDA graphs to the default mode, a compile to eager, a compiled first step whose gradients were not finite or far from eager's to eager, evaluations to eager)", objective=False))
    rung: int | None = field(default=None, metadata=metric(
        "maximize", "count", "the fidelity ladder's rung the figures are from (0: the first; a run without a ladder is at 0)",
        objective=False))
    cut: bool = field(default=False, metadata=metric(
        None, "text", "stopped by the wall-clock budget before its last step (its learning rate never decayed)", objective=False))
    predicted_bits_per_byte: float | None = field(default=None, metadata=metric(
        "minimize", "bits/byte", "bits per byte at proxy.predict_tokens, from a power law fitted to the run's evaluations",
        label="predicted bits/byte", detail="{:.4f}", requires=PREDICTS))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Diverged(ArchsearchError):
    """The training loss stopped being finite."""


Report = Callable[[dict[str, float]], None]


class Checkpoint(Protocol):
    """Where a ladder run keeps its state, as bytes: the caller decides where they live (a study's driver keeps
    them in its run directory)."""

    def load(self) -> bytes | None: ...

    def save(self, data: bytes) -> None: ...


def run_proxy(arch: Architecture, settings: ProxySettings | None = None, report: Report | None = None,
              on_step: Callable[[int, float], None] | None = None, save_weights: Callable[[bytes], None] | None = None, *,
              rungs: Sequence[int] = (), checkpoint: Checkpoint | None = None) -> Metrics:
    """Train `arch` for the settings' budget and measure it. `report` receives each intermediate evaluation
    (tokens, val_loss, ...) as training goes; `on_step` every step's (tokens, loss). With `save_weights`, it
    receives the trained weights as safetensors bytes. Never raises for a trial's own failure (divergence, out of
    memory): those come back as the status.

    `rungs` (token budgets below the settings' budget) make the run a fidelity ladder: at each rung it is evaluated
    on the whole held-out set as a run of that budget would be (under wsd, on a decay branch off the stable phase,
    after which it goes on from the stable state), and `report` gets the point with its `rung` index; if `report`
    returns False there, the run stops and its metrics are that rung's. With `checkpoint`, the state at each rung is
    saved there (before the rung is reported), and a run that finds a checkpoint of the same architecture and
    settings goes on from its last rung (reporting that rung's point again, so whoever decides promotion can decide
    again).
    """
    settings = settings or ProxySettings()
    start = time.perf_counter()
    device = _device(settings.device)
    metrics = Metrics(device=_device_name(device), started_at=time.time())
    try:
        _run(arch, settings, device, metrics, report, on_step, save_weights, tuple(rungs), checkpoint)
    except Diverged as e:
        metrics.status, metrics.reason = "diverged", str(e)
    except torch.cuda.OutOfMemoryError as e:
        metrics.status, metrics.reason = "oom", str(e).splitlines()[0]
    finally:
        metrics.wall_seconds = time.perf_counter() - start
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return metrics


def _run(arch, settings, device, metrics, report, on_step, save_weights, rungs, checkpoint) -> None:
    run = _Training(arch, settings, device, metrics, rungs)
    try:
        run.resume(checkpoint)
        run.train(report, on_step, checkpoint)
    finally:
        run.close()
    final = metrics.history[-1]
    metrics.val_loss = final["val_loss"]
    if not math.isfinite(metrics.val_loss):
        raise Diverged(f"validation loss is {metrics.val_loss}")
    metrics.perplexity = final.get("perplexity")
    metrics.bits_per_byte = final.get("bits_per_byte")
    metrics.accuracy = final.get("accuracy")
    metrics.rung = final.get("rung", 0)
    if settings.predict_tokens is not None and run.corpus is not None:
        metrics.predicted_bits_per_byte = predicted_bits_per_byte(metrics.history, settings.predict_tokens)
    _record_rate(metrics, run.windows, run.plan_steps, settings.timing_steps, run.tokens_per_step)
    if device.type == "cuda":
        metrics.peak_memory_bytes = torch.cuda.max_memory_allocated(device)
    if save_weights is not None:
        from safetensors.torch import save

        save_weights(save({k: v.detach().contiguous().cpu() for k, v in run.model.state_dict().items()}))
    if settings.inference:
        lock = DeviceLock(device)
        try:
            metrics.__dict__.update(inference_speed(run.model, settings.batch_size, run.seq_len, settings.decode_tokens, run.vocab, device, run.dtype, lock))
        finally:
            lock.close()


@dataclass(frozen=True)
class _Rung:
    """One rung of a ladder: its budget in steps and its own schedule (under wsd, its decay branch)."""

    index: int
    schedule: Schedule

    @property
    def branch_at(self) -> int:
        """The step after which the rung's figures are taken off the run: where its decay branch starts (wsd), or
        the rung's last step (no branch: the run itself is evaluated)."""
        return self.schedule.stable_end


class _Training:
    """One proxy run's state: model, optimizer, batches, the step reached, evaluations and timing; the steps,
    evaluations, rung branches and checkpoints that move it on."""

    def __init__(self, arch: Architecture, settings: ProxySettings, device: torch.device, metrics: Metrics, rungs: tuple[int, ...]) -> None:
        self.created = time.perf_counter()
        self.settings, self.device, self.metrics = settings, device, metrics
        torch.manual_seed(settings.seed)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.corpus, self.task = None, None
        if settings.task == "lm":
            self.corpus = load_corpus(settings.data)
            metrics.corpus_digest = self.corpus.digest
            self.vocab = self.corpus.vocab_size
        else:
            self.task = settings.task_spec()
            self.vocab = self.task.vocab_size
        if arch.vocab_size != self.vocab:  # the data decides the vocabulary; everything else is the architecture's
            arch = dataclasses.replace(arch, vocab_size=self.vocab)
        self.identity = f"{arch.digest}:{json.dumps(settings.key_data(), sort_keys=True, default=str)}:{list(rungs)}"
        self.model = build_model(arch).to(device)
        metrics.params = sum(p.numel() for p in self.model.parameters())
        compiled = _compiles(settings, device)
        # a captured step reads its learning rate from a tensor, and its optimizer's state lives on the device
        step_graph = compiled and settings.compile_mode == STEP_GRAPH and device.type == "cuda"
        self.peak_lr = settings.for_width(arch.d_model).lr
        self.opt = _optimizer(self.model, self.peak_lr, settings, device, capturable=step_graph)
        self.seq_len = self.task.seq_len if self.task else settings.seq_len
        self.tokens_per_step = settings.batch_size * self.seq_len
        self.steps = max(1, settings.tokens // self.tokens_per_step)
        rung_steps = sorted({max(1, t // self.tokens_per_step) for t in rungs if t // self.tokens_per_step < self.steps})
        if len(rungs) and len(rung_steps) != len(rungs):
            raise ArchsearchError(f"rungs: expected distinct budgets of at least one step ({self.tokens_per_step:,} tokens) below the "
                                  f"budget of {settings.tokens:,} tokens, got {list(rungs)}")
        first = rung_steps[0] if rung_steps else self.steps
        # the warm-up is fixed in tokens, so runs of different budgets (and every rung) share it
        warmup = max(1, min(settings.warmup_tokens // self.tokens_per_step, first // 4))
        plan = lambda steps: Schedule.plan(settings.schedule, steps, warmup, settings.decay, settings.min_lr_ratio)  # noqa: E731
        self.schedule = plan(self.steps)
        self.rungs = [_Rung(i, plan(s)) for i, s in enumerate(rung_steps)]
        self.final_rung = len(self.rungs)
        self.eval_at = {max(1, round(self.steps * (i + 1) / settings.evals)) for i in range(settings.evals)}
        # timed inside the first rung's stable phase, so every rung (and a run stopped at the first) has its rate
        self.plan_steps = self.rungs[0].branch_at if self.rungs else self.steps
        self.windows = TimingWindows.plan(self.plan_steps, settings.timing_steps) if settings.timing_steps else None
        self.lock = DeviceLock(device)
        # autocast's cache of cast weights would be baked into a captured step as stale copies
        self.autocast = torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype != torch.float32, cache_enabled=not step_graph)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # on the device once: every evaluation reads the same batches
        self.eval_batches = [(x.to(device), y.to(device)) for x, y in _eval_batches(settings, self.corpus, self.task, self.seq_len)]
        self.step_fn = _Steps(self.model, self.opt, settings, self.autocast, compiled=compiled)
        self.step = 0  # steps done on the run's own trajectory
        self.resumed_point: dict[str, float] | None = None  # the rung point a checkpoint ended at
        self.resumed_rung = -1
        self._train_loss = torch.zeros((), device=device)  # summed on the device between evaluations: no host sync
        self._train_count = 0

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.corpus is not None:
            x, y = self.corpus.batch("train", self.settings.batch_size, self.seq_len, self.generator)
        else:
            x, y = TASKS[self.task.name](self.task, self.settings.batch_size, self.generator)
        if self.device.type == "cuda":  # a copy from pageable memory would wait for the GPU: a host sync every step
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def _one_step(self, step: int, schedule: Schedule, timed: bool):
        lr = self.peak_lr * schedule(step)
        for group in self.opt.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)  # read by a captured step on the device: no host sync, no new graph
            else:
                group["lr"] = lr
        compiling = self.step_fn.compiling
        if compiling:
            # tracing and Inductor are host work that no timer should wait on: the first step runs unlocked (its own
            # kernels may then overlap another trial's timed window once; the median of three windows absorbs that)
            self.lock.release()
        with contextlib.nullcontext() if timed or compiling else self.lock.shared():
            out = self.step_fn(*self.batch())
        self._train_loss += out.ce_loss.detach().float()
        self._train_count += 1
        return out

    def train(self, report: Report | None, on_step: Callable[[int, float], None] | None, checkpoint: Checkpoint | None) -> None:
        s, windows, metrics = self.settings, self.windows, self.metrics
        if self.resumed_point is not None and report is not None and report(dict(self.resumed_point)) is False:
            return  # stopped again at the rung it had reached
        rungs = [r for r in self.rungs if r.index > self.resumed_rung]
        wall_start = time.perf_counter()
        metrics.setup_seconds = wall_start - self.created
        # the exclusive lock of a timed window lives on this stack: released at the window's end, and on every
        # way out of the loop (a wall-clock cut inside a window, divergence, any error)
        with contextlib.ExitStack() as timing:
            for step in range(self.step + 1, self.steps + 1):
                timed = windows is not None and windows.inside(step)
                if windows is not None and windows.starts(step):
                    if step == windows.first:  # one hand-over for all the windows: each drains every other trial
                        timing.enter_context(self.lock.exclusive())  # drains this process's queue too
                        timing.callback(self._held, time.time())
                    windows.start()
                out = self._one_step(step, self.schedule, timed)
                self.step = step
                metrics.tokens_trained = step * self.tokens_per_step
                if windows is not None and windows.ends(step):
                    synchronize(self.device)
                    windows.stop()
                    if step == windows.last:
                        timing.close()
                    timed = False
                over_time = s.seconds is not None and time.perf_counter() - wall_start > s.seconds
                last = step == self.steps or over_time
                evaluate = step in self.eval_at or last
                rung = rungs.pop(0) if rungs and rungs[0].branch_at == step and not last else None
                if not (evaluate or rung or (step % 10 == 0 and not timed)):
                    continue  # a host sync every 10 steps for the loss, none inside the timed windows
                self.lock.release()  # host-side work follows (reports, checkpoints): no timer may wait on it
                if timed:  # an evaluation inside a timed window: the clock skips it
                    synchronize(self.device)
                    windows.pause()
                loss = out.ce_loss.item()
                if not math.isfinite(loss):
                    raise Diverged(f"training loss became {loss} at step {step} of {self.steps}")
                if on_step is not None:
                    on_step(metrics.tokens_trained, loss)
                if evaluate:
                    point = self._evaluate(full=last, rung=self.final_rung if last and self.rungs else None,
                                           decayed=self.schedule.decay > 0 and step > self.schedule.stable_end)
                    metrics.history.append(point)
                    if report is not None:
                        report(dict(point))
                if rung is not None and not self._rung(rung, report, checkpoint):
                    return
                if timed:
                    windows.resume()
                if over_time:
                    metrics.cut = step < self.steps
                    break

    def _held(self, since: float) -> None:
        """Record the exclusive hold that began at `since` (Unix time) and ends now, after the run's start."""
        start = self.metrics.started_at
        self.metrics.exclusive_from_s, self.metrics.exclusive_until_s = round(since - start, 3), round(time.time() - start, 3)

    def _rung(self, rung: _Rung, report: Report | None, checkpoint: Checkpoint | None) -> bool:
        """The rung's figures: under wsd a decay branch off the stable state, evaluated, after which the run goes
        on from the stable state; otherwise the run itself, evaluated. False when `report` stops the run here."""
        stable = self._state() if rung.schedule.decay else None
        kept = self._train_loss.clone(), self._train_count  # the branch's losses are the rung's, not the run's
        self._train_loss.zero_()
        self._train_count = 0
        for step in range(rung.branch_at + 1, rung.schedule.steps + 1):
            self._one_step(step, rung.schedule, timed=False)
        point = self._evaluate(full=True, rung=rung.index, tokens=rung.schedule.steps * self.tokens_per_step, decayed=rung.schedule.decay > 0)
        self.metrics.history.append(point)
        if checkpoint is not None:
            self._save(checkpoint, stable or self._state())
        if report is not None and report(dict(point)) is False:
            self.metrics.tokens_trained = int(point["tokens"])
            return False
        if stable is not None:
            self._load_state(stable)
        self._train_loss.copy_(kept[0])
        self._train_count = kept[1]
        return True

    def _evaluate(self, full: bool, rung: int | None, tokens: int | None = None, decayed: bool = False) -> dict[str, float]:
        start = time.perf_counter()
        try:
            return self._evaluation_point(full, rung, tokens, decayed)
        finally:
            self.metrics.eval_seconds += time.perf_counter() - start

    def _evaluation_point(self, full: bool, rung: int | None, tokens: int | None, decayed: bool) -> dict[str, float]:
        # compiling is host work that no timer should wait on: like the compiling first step, it runs unlocked
        compiling = self.step_fn.evaluation_compiles
        if compiling:
            self.lock.release()
        # each batch under the shared lock, as a training step is: a timer waits for one batch, not a whole evaluation
        hold = contextlib.nullcontext if compiling else self.lock.shared
        batches = self.eval_batches if full else self.eval_batches[: max(1, len(self.eval_batches) // 4)]
        try:
            point = self.step_fn.evaluate(lambda: _validation_point(self.model, batches, self.corpus, self.task, self.device, self.autocast, hold))
        finally:
            self.lock.release()  # host-side work follows
        point["tokens"] = tokens if tokens is not None else self.step * self.tokens_per_step
        if decayed:  # taken during a wsd decay: the learning curve's extrapolation treats it apart
            point["decayed"] = True
        if self._train_count:
            point["train_loss"] = float(self._train_loss) / self._train_count
            self._train_loss.zero_()
            self._train_count = 0
        if rung is not None:  # a rung point carries the run's rate too (timed in the first rung), for promotion
            point["rung"] = rung
            rate = self.windows.rate(self.tokens_per_step) if self.windows is not None else None
            if rate is not None:
                point["train_tokens_per_s"], point["train_tokens_per_s_spread"] = rate
        return point

    # --- state: rung branches and checkpoints ---------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        with self.lock.shared(keep=False):
            return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                    "opt": copy.deepcopy(self.opt.state_dict()), "generator": self.generator.get_state(), "step": self.step}

    def _load_state(self, state: dict[str, Any]) -> None:
        with self.lock.shared(keep=False):
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.step_fn.optimizer_loaded()
        self.generator.set_state(state["generator"])
        self.step = state["step"]

    def _save(self, checkpoint: Checkpoint, state: dict[str, Any]) -> None:
        """The stable state and what the run measured so far."""
        data = {"identity": self.identity, "state": state, "history": self.metrics.history,
                "timing": list(self.windows.seconds) if self.windows else [], "compiled": self.step_fn.compiled}
        buffer = io.BytesIO()
        torch.save(data, buffer)
        checkpoint.save(buffer.getvalue())

    def resume(self, checkpoint: Checkpoint | None) -> None:
        """Go on from the checkpoint when it holds this run's state (same architecture, settings and rungs)."""
        raw = checkpoint.load() if checkpoint is not None else None
        if raw is None:
            return
        try:
            data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)  # the state dicts load onto the device; the generator stays here
        except Exception:  # noqa: BLE001 - torn or foreign bytes are no checkpoint: the run starts over
            return
        if not isinstance(data, dict) or data.get("identity") != self.identity:
            return
        self._load_state(data["state"])
        self.metrics.history = list(data["history"])
        if self.windows is not None:
            self.windows.seconds = list(data["timing"])
        self.resumed_point = self.metrics.history[-1]
        self.resumed_rung = int(self.resumed_point["rung"])
        self.metrics.tokens_trained = int(self.resumed_point["tokens"])

    def close(self) -> None:
        self.step_fn.release()
        self.step_fn.record(self.metrics)
        self.metrics.lock_wait_seconds = self.lock.waited
        self.lock.close()


def _compiles(settings: ProxySettings, device: torch.device) -> bool:
    return settings.compile is True or (settings.compile == "auto" and device.type == "cuda")


def _record_rate(metrics: Metrics, windows: TimingWindows | None, plan_steps: int, timing_steps: int, tokens_per_step: int) -> None:
    """train_tokens_per_s from the timed windows; None with the reason when they did not all run (never a
    whole-run rate, which would count compilation and warm-up)."""
    if not timing_steps:
        metrics.timing_note = "not timed (timing_steps: 0)"
        return
    if windows is None:
        metrics.timing_note = (
            f"too short to time: {plan_steps} steps cannot hold the warm-up and {WINDOWS} windows of "
            f"{timing_steps} steps (lower timing_steps or raise tokens)"
        )
        return
    rate = windows.rate(tokens_per_step)
    if rate is None:
        metrics.timing_note = windows.missing()
        return
    metrics.train_tokens_per_s, metrics.train_tokens_per_s_spread = rate


# the largest relative distance (norm) a compiled first step's gradients may lie from the eager model's: compiled
# against eager in bf16 on an H200, every family came within 0.21 (DeltaNet, whose eager gradients lie 0.23 from
# float32: rounding) and cuDNN's miscompiled attention in the block-recurrent cell at 0.80 (benchmarks/RESULTS.md)
GRADIENT_AGREEMENT = 0.5


def _gradients(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().flatten().float() for p in model.parameters() if p.grad is not None])


class _Steps:
    """One training step (forward, backward, clip, optimizer), compiled when asked.

    Compiled means each layer and the head compiled on its own, in one graph each (`HybridLM.compile_regions`,
    `fullgraph=True`, fixed shapes): compiling then costs one layer per layer kind, not the whole depth, and the
    shared cache serves every trial holding the same layers. Inductor compiles the forwards at the first step and
    the backwards at its first backward, so the first step is attempted compiled: if compiling fails (a block that
    cannot be traced, a backend error), the step is redone eagerly and the run goes on eagerly, with the reason
    recorded; so does a first step whose gradients are not finite or lie far from the eager model's on the same
    batch (measured by one eager step before it). Evaluation runs the same modules.

    Under a CUDA graph mode (`compile_mode: reduce-overhead`), torch's CUDA graph trees record each compiled region's
    forward and backward and replay them; the optimizer stays eager, outside the graphs. A replay overwrites the
    outputs of the step before, so each step is marked as a new one and the losses it returns are copies. Off CUDA,
    Inductor skips the graphs and the step is the default mode's.

    Under `step-graph` the regions compile in the default mode, and after the compiling step and one more, both on
    the capture stream (lazy initialisations stay out of the capture, and no autograd node keeps the default
    stream), the whole step is captured as one CUDA graph (PyTorch's whole-network capture): each later step copies
    its batch into the graph's inputs and replays it, a few launches of host work whatever the depth. The graph holds
    the optimizer's tensors, so loading an optimizer state (a rung's branch, a checkpoint) drops it, and the next
    step captures again.

    A first step (or capture) that fails under CUDA graphs is compiled again without them (step-graph as
    reduce-overhead, reduce-overhead as default) before eager is the last resort; each reason recorded.
    """

    def __init__(self, model: HybridLM, opt: torch.optim.Optimizer, settings: ProxySettings, autocast, compiled: bool) -> None:
        self.model, self.opt, self.settings, self.autocast = model, opt, settings, autocast
        self.compiled = compiled
        self.mode = settings.compile_mode  # its form without CUDA graphs after they failed
        self.compile_seconds: float | None = None
        self.error = ""
        self._first = compiled
        self._evaluated = False  # whether an evaluation ran (the first compiles the layers for eval mode)
        self._eager_evaluation = False  # set when the evaluation graphs failed to compile (see evaluate)
        self._graph: _StepGraph | None = None  # the captured step (step-graph), once captured
        self._warm_steps = 0  # steps run since the last capture was dropped (step-graph)
        self._failed_captures = 0
        self._on_cuda = next(model.parameters()).is_cuda  # captures are CUDA's
        if compiled:
            _share_compile_cache()
            # one compiled graph per layer kind: a hybrid may hold more kinds than dynamo's default of 8 per code
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            self._compile()

    def _compile(self) -> None:
        self.model.compile_regions(fullgraph=True, dynamic=False, mode=torch_compile_mode(self.mode))

    def _compile_without_graphs(self) -> None:
        """Compiled again in the mode this one falls back to when its CUDA graphs fail."""
        self.model.uncompile_regions()
        self.mode = WITHOUT_CUDA_GRAPHS[self.mode]
        self._compile()

    @property
    def graphs(self) -> bool:
        """Whether the steps replay torch's CUDA graph trees (compiled, in one of their modes)."""
        return self.compiled and self.mode in TREE_MODES

    @property
    def _captures(self) -> bool:
        """Whether steps are to be captured whole (step-graph, compiled, on CUDA)."""
        return self.compiled and self.mode == STEP_GRAPH and self._on_cuda

    @property
    def compiling(self) -> bool:
        """Whether the next step compiles or captures (host work: the first of a compiled run; under step-graph
        also the step on the capture stream and the capture)."""
        return self._first or (self._captures and self._graph is None)

    @property
    def evaluation_compiles(self) -> bool:
        """Whether the next evaluation compiles: a compiled run's first, since eval mode without gradients is a new
        graph for every layer and the head."""
        return self.compiled and not self._evaluated

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        if self._graph is not None:
            return self._graph.replay(x, y)
        if self._first:  # under step-graph on the capture stream, as every step not replayed
            return self._on_capture_stream(self._compiling_step, x, y) if self._captures else self._compiling_step(x, y)
        if not self._captures:
            return self._step(x, y)
        self._warm_steps += 1
        start = time.perf_counter()
        try:
            if self._warm_steps < CAPTURE_AFTER:
                out = self._on_capture_stream(self._step, x, y)
            else:
                self._graph = _StepGraph(self._body, self.opt, x, y)
                out = self._graph.replay(x, y)
                synchronize(x.device)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - a step that cannot be captured falls back; the trial goes on
            self._graph = None
            self.opt.zero_grad(set_to_none=True)
            synchronize(x.device)
            self._failed_captures += 1
            self._fell_back(f"{self.mode}, capture {self._failed_captures} of {CAPTURE_ATTEMPTS}", e)
            if self._failed_captures < CAPTURE_ATTEMPTS:  # a failure can be passing (a late lazy initialisation)
                out = self._on_capture_stream(self._step, x, y)  # this step runs plainly; the next one captures again
                self._warm_steps = CAPTURE_AFTER - 1
                self._spent(start)
                return out
            self._compile_without_graphs()
            self._spent(start)
            return self._compiling_step(x, y)
        self._spent(start)
        return out

    def _spent(self, start: float) -> None:
        self.compile_seconds = (self.compile_seconds or 0.0) + time.perf_counter() - start

    def _compiling_step(self, x: torch.Tensor, y: torch.Tensor):
        self._first = False
        start = time.perf_counter()
        while True:
            try:
                # a compiled backward whose gradients are not finite, or far from the eager model's on the same batch,
                # is a failed compile (cuDNN attention in the block-recurrent cell, on CUDA: NaN, or 0.80 off):
                # caught before the optimizer takes them
                out = self._step(x, y, check_gradients=True, reference=self._eager_gradients(x, y))
                synchronize(x.device)
                break
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever the compiler raises, the trial goes on
                self._fell_back(self.mode, e)
                self.opt.zero_grad(set_to_none=True)
                if self.mode in TREE_MODES:  # CUDA graphs refused: compiled without them, if that holds
                    self._compile_without_graphs()
                    continue
                self.model.uncompile_regions()
                self.compiled = False
                return self._step(x, y)
        self._spent(start)
        return out

    def _on_capture_stream(self, step: Callable, x: torch.Tensor, y: torch.Tensor):
        """A step run plainly on the capture stream. Autograd's nodes for the parameters' gradients keep the stream
        they were first run on: one run on the default (legacy) stream makes every later capture fail ("operation
        would make the legacy stream depend on a capturing blocking stream"), so under step-graph no step runs there."""
        stream = _capture_stream(x.device)
        stream.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(stream):
            out = step(x, y)
        torch.cuda.current_stream(x.device).wait_stream(stream)
        synchronize(x.device)  # the batch was made on the other stream: nothing may free it under this one
        return out

    def _body(self, x: torch.Tensor, y: torch.Tensor, check_gradients: bool = False, reference: torch.Tensor | None = None):
        """Forward, backward, clip and the optimizer's step: what a step-graph captures. `check_gradients`: raise,
        before the optimizer's step, if the gradients are not finite (one host sync); `reference`: also if they lie
        further than GRADIENT_AGREEMENT from these (the eager model's, `_eager_gradients`)."""
        with self.autocast:
            out = self.model(x, y)
        out.loss.backward()
        if reference is not None:
            distance = ((_gradients(self.model) - reference).norm() / reference.norm()).item()
            if distance > GRADIENT_AGREEMENT:  # a non-finite one is the clip's to refuse, below
                raise RuntimeError(f"compiled gradients {distance:.2f} away from eager's (relative norm) on the first batch; "
                                   f"bf16 rounding stays under {GRADIENT_AGREEMENT}")
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip, error_if_nonfinite=check_gradients)
        self.opt.step()
        return out

    def _eager_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The eager model's gradients on this batch, flat in float32 (left in no parameter)."""
        try:
            with self.model.eager_regions(), self.autocast:
                out = self.model(x, y)
                out.loss.backward()
            return _gradients(self.model)
        finally:
            self.opt.zero_grad(set_to_none=True)

    def _step(self, x: torch.Tensor, y: torch.Tensor, check_gradients: bool = False, reference: torch.Tensor | None = None):
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()
        out = self._body(x, y, check_gradients, reference)
        self.opt.zero_grad(set_to_none=True)
        # under CUDA graph trees the next replay writes over this step's outputs: the losses the run logs are copies
        return _kept(out, copy=self.graphs)

    def optimizer_loaded(self) -> None:
        """After the optimizer's state was loaded (new tensors): a captured step would update the old ones, so it
        is dropped (the next steps capture again), and a capturable optimizer's learning rates are device tensors
        again (a checkpoint holds them on the CPU)."""
        self._graph, self._warm_steps = None, 0
        self.opt.zero_grad(set_to_none=True)  # a replay leaves its gradients in place: a plain step would add to them
        for group in self.opt.param_groups:
            if group.get("capturable"):
                group["lr"] = torch.tensor(float(group["lr"]), device=group["params"][0].device)

    def release(self) -> None:
        """Free the captured step's memory (the run is over)."""
        self._graph = None

    def evaluate(self, run: Callable[[], dict[str, float]]) -> dict[str, float]:
        """An evaluation (`run`). If the first fails to compile where training compiled (a block that branches on
        `self.training`), evaluations run eagerly, training stays compiled, and the reason is recorded: the trial
        goes on."""
        first, self._evaluated = self.evaluation_compiles, True
        if not self._eager_evaluation:
            try:
                return run()
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as e:
                if not first:
                    raise
                self._fell_back("evaluation, run eagerly", e)
                self._eager_evaluation = True
        with torch.compiler.set_stance("force_eager"):
            return run()

    def _fell_back(self, what: str, e: BaseException) -> None:
        """Record, after the reasons before it, why `what` fell back: the error's type and first line, or the first
        error it was raised after (a failed capture ends in an error that only says a previous one happened)."""
        first = e
        while first.__context__ is not None:
            first = first.__context__
        lines = str(first).strip().splitlines()
        then = f" (then {type(e).__name__})" if first is not e else ""
        self.error = "; ".join(filter(None, [self.error, f"{what}: {type(first).__name__}: {lines[0] if lines else ''}{then}"[:300]]))

    def record(self, metrics: Metrics) -> None:
        metrics.compiled = self.compiled
        metrics.compile_seconds = self.compile_seconds
        metrics.compile_error = self.error


CAPTURE_AFTER = 2  # step-graph: steps run plainly (the compiling one, then one on the capture stream) before capturing
CAPTURE_ATTEMPTS = 2  # step-graph: captures tried (each after a plain step) before falling back to reduce-overhead


def _kept(out, copy: bool):
    """The step's output with its losses detached: holding their autograd graph would keep this step's nodes
    alive into the next step. `copy`: copies, for outputs that a replay overwrites."""
    kept = {k: getattr(out, k) for k in ("loss", "ce_loss", "aux_loss") if getattr(out, k) is not None}
    return dataclasses.replace(out, **{k: t.detach().clone() if copy else t.detach() for k, t in kept.items()})


@functools.cache
def _capture_stream(device: torch.device) -> torch.cuda.Stream:
    return torch.cuda.Stream(device)


class _StepGraph:
    """A training step captured as one CUDA graph: static inputs the batches are copied into, and the step's output
    (its losses), which every replay overwrites. The gradients are allocated inside the capture (set to None just
    before it), so each replay writes them afresh rather than adding to them."""

    def __init__(self, body: Callable, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.clone(), y.clone()
        opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        collecting = gc.isenabled()
        gc.disable()  # a finaliser run mid-capture (a previous trial's graph, stream or event) would break it
        try:
            # thread_local: a CUDA call from another thread of this process (a warm worker's) is not ours to refuse
            with torch.cuda.graph(self.graph, stream=_capture_stream(x.device), capture_error_mode="thread_local"):
                self.out = body(self.x, self.y)
        finally:
            if collecting:
                gc.enable()

    def replay(self, x: torch.Tensor, y: torch.Tensor):
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.graph.replay()
        return _kept(self.out, copy=True)


COMPILE_CACHE_ENV = "ARCHSEARCH_COMPILE_CACHE"  # a folder for Inductor's and Triton's caches, shared by trials


def _share_compile_cache() -> None:
    """Point Inductor's and Triton's on-disk caches at ARCHSEARCH_COMPILE_CACHE when it is set (a study points it
    into its run folder), so a model shape is compiled once per study, not once per trial process; caches set
    explicitly (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR) win."""
    folder = os.environ.get(COMPILE_CACHE_ENV)
    if not folder:
        return
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(folder, "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(folder, "triton"))


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ArchsearchError(f"device: {name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArchsearchError(f"device: {name} asked for, but this machine has no CUDA GPU")
    return device


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _optimizer(model: HybridLM, lr: float, settings: ProxySettings, device: torch.device, capturable: bool = False) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on norms, gains, biases or SSM vectors); `capturable`: its
    step can be captured in a CUDA graph (state and learning rate as device tensors)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    lr = torch.tensor(lr, device=device) if capturable else lr
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda", capturable=capturable)


def _eval_batches(settings: ProxySettings, corpus: Corpus | None, task: TaskSpec | None, seq_len: int) -> list:
    """The held-out batches: the same for every trial with these settings, whatever their budget (so their losses
    compare, across budgets too)."""
    tokens = max(settings.eval_tokens, settings.batch_size * seq_len)
    if corpus is not None:
        return list(corpus.val_batches(settings.batch_size, seq_len, tokens))
    g = torch.Generator().manual_seed(10_000 + settings.seed)
    n = max(1, tokens // (settings.batch_size * seq_len))
    entry = TASKS[task.name]
    held_out = entry.held_out(task)  # a training mixture is scored on its hardest member
    return [entry(held_out, settings.batch_size, g) for _ in range(n)]


@torch.no_grad()
def _validation_point(model: HybridLM, batches: list, corpus: Corpus | None, task: TaskSpec | None, device, autocast,
                      hold: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> dict[str, float]:
    """The held-out loss (and bits per byte, accuracy) over `batches`, each batch's work inside `hold()`."""
    model.eval()
    # summed on the device and read once: a read per batch would wait for the GPU to drain each time
    total, count = torch.zeros((), device=device, dtype=torch.float64), torch.zeros((), device=device, dtype=torch.int64)
    correct, scored = 0.0, 0
    for x, y in batches:
        with hold():
            with autocast:
                out = model(x, y, keep_logits=task is not None)
            n = (y != -1).sum()
            total += out.ce_loss.detach().double() * n
            count += n
            if task is not None:
                here = int(n)
                correct += accuracy(out.logits, y) * here
                scored += here
    model.train()
    loss = float(total) / max(int(count), 1)
    point = {"val_loss": loss, "perplexity": math.exp(min(loss, 700.0))}
    if corpus is not None and corpus.bytes_per_token:
        point["bits_per_byte"] = loss / LN2 / corpus.bytes_per_token
    if task is not None:
        point["accuracy"] = correct / max(scored, 1)
    return point
