"""Short-budget training and evaluation of one architecture: the numbers a trial turns into objectives."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .._metric import Requirement, metric
from ..architecture import MAX_CONTEXT, Architecture
from ..errors import ArchsearchError
from ..model import HybridLM, build_model
from .data import Corpus, DataSpec, load_corpus
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
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final learning rate as a share of the peak"})
    warmup: float = field(default=0.05, metadata={"help": "warm-up as a share of the steps"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay on matrices"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient norm clip"})
    evals: int = field(default=8, metadata={"help": "intermediate evaluations (for early stopping), the last one final"})
    eval_tokens: int = field(default=131_072, metadata={"help": "tokens of the final evaluation; intermediate ones use its first quarter (capped at half the budget)"})
    compile: bool | Literal["auto"] = field(default="auto", metadata={"help": "true, false, or auto: compiled on CUDA, eager elsewhere"})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu, cuda, cuda:N"})
    seed: int = field(default=0, metadata={"help": "seed of the initialisation and the batches"})
    timing_steps: int = field(default=20, metadata={"help": "training steps per timed window (three windows, timed exclusively) for tokens/s"})
    inference: bool = field(default=False, metadata={"help": "also measure prefill and decode tokens/s"})
    decode_tokens: int = field(default=64, metadata={"help": "tokens decoded when measuring decode tokens/s"})

    def __post_init__(self) -> None:
        compile_ = {"true": True, "false": False}.get(self.compile, self.compile) if isinstance(self.compile, str) else self.compile
        if compile_ not in (True, False, "auto"):
            raise ArchsearchError(f"compile: expected true, false or auto, got {self.compile!r}")
        object.__setattr__(self, "compile", compile_)
        if self.task != "lm" and self.task not in TASKS:
            raise ArchsearchError(f"task: unknown proxy task {self.task!r}; expected lm, {', '.join(TASKS)}")
        for name, top in _INT_RANGES.items():
            value = getattr(self, name)
            if not 1 <= value <= top:
                raise ArchsearchError(f"{name}: expected a positive integer of at most {top:,}, got {value:,}")
        for name, (low, high, low_open) in _FLOAT_RANGES.items():
            value = getattr(self, name)
            if value is None and name == "seconds":
                continue
            if not (math.isfinite(value) and (value > low if low_open else value >= low) and value <= high):
                raise ArchsearchError(f"{name}: expected a number {'above' if low_open else 'from'} {low:g} to {high:g}, got {value!r}")
        if not _DEVICE.fullmatch(self.device):
            raise ArchsearchError(f"device: unknown device {self.device!r}; expected auto, cpu, cuda or cuda:N")

    def task_spec(self) -> TaskSpec:
        return self.synthetic or TaskSpec(self.task, seq_len=self.seq_len)


_INT_RANGES = {"seq_len": MAX_CONTEXT, "batch_size": 1 << 16, "tokens": 1 << 50, "evals": 10_000,
               "eval_tokens": 1 << 40, "timing_steps": 100_000, "decode_tokens": MAX_CONTEXT}
_FLOAT_RANGES = {"lr": (0.0, 1e6, True), "min_lr_ratio": (0.0, 1.0, False), "warmup": (0.0, 1.0, False),  # (low, high, low open)
                 "weight_decay": (0.0, 100.0, False), "grad_clip": (0.0, 1e6, False), "seconds": (0.0, 1e9, True)}
_DEVICE = re.compile(r"auto|cpu|cuda(:\d{1,3})?")

# what the settings must say for a metric to be measured (see archsearch.metrics)
LM_TASK = Requirement(lambda s: s.task == "lm", "the language-modelling proxy (proxy.task: lm)")
SYNTHETIC_TASK = Requirement(lambda s: s.task != "lm", "a synthetic proxy task (proxy.task: mqar, selective_copy or induction)")
INFERENCE = Requirement(lambda s: s.inference, "proxy.inference: true")
CUDA = Requirement(lambda s: s.device != "cpu", "a CUDA device (peak memory is measured on CUDA only)")


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
    compile_seconds: float | None = field(default=None, metadata=metric(
        "minimize", "seconds", "wall time of the first compiled step: tracing, Inductor, one step",
        detail="{:.1f} s", objective=False))
    compile_error: str = field(default="", metadata=metric(
        None, "text", "why a compile asked for fell back to eager", objective=False))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Diverged(ArchsearchError):
    """The training loss stopped being finite."""


Report = Callable[[dict[str, float]], None]


def run_proxy(arch: Architecture, settings: ProxySettings | None = None, report: Report | None = None,
             on_step: Callable[[int, float], None] | None = None, weights_path: str | None = None) -> Metrics:
    """Train `arch` for the settings' budget and measure it. `report` receives each intermediate evaluation
    (tokens, val_loss, ...) as training goes; `on_step` every step's (tokens, loss). With `weights_path`, the
    trained weights are saved there as safetensors. Never raises for a trial's own failure (divergence, out of
    memory): those come back as the status."""
    settings = settings or ProxySettings()
    start = time.perf_counter()
    device = _device(settings.device)
    metrics = Metrics(device=_device_name(device))
    try:
        _run(arch, settings, device, metrics, report, on_step, weights_path)
    except Diverged as e:
        metrics.status, metrics.reason = "diverged", str(e)
    except torch.cuda.OutOfMemoryError as e:
        metrics.status, metrics.reason = "oom", str(e).splitlines()[0]
    finally:
        metrics.wall_seconds = time.perf_counter() - start
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return metrics


def _run(arch, settings, device, metrics, report, on_step, weights_path) -> None:
    torch.manual_seed(settings.seed)
    g = torch.Generator().manual_seed(settings.seed)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    corpus, task = None, None
    if settings.task == "lm":
        corpus = load_corpus(settings.data)
        metrics.corpus_digest = corpus.digest
        vocab = corpus.vocab_size
    else:
        task = settings.task_spec()
        vocab = task.vocab_size
    if arch.vocab_size != vocab:  # the data decides the vocabulary; everything else is the architecture's
        arch = dataclasses.replace(arch, vocab_size=vocab)
    model = build_model(arch).to(device)
    metrics.params = sum(p.numel() for p in model.parameters())
    opt = _optimizer(model, settings, device)
    seq_len = task.seq_len if task else settings.seq_len
    tokens_per_step = settings.batch_size * seq_len
    steps = max(1, settings.tokens // tokens_per_step)
    eval_at = {max(1, round(steps * (i + 1) / settings.evals)) for i in range(settings.evals)}
    windows = TimingWindows.plan(steps, settings.timing_steps)
    lock = DeviceLock(device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    eval_batches = _eval_batches(settings, corpus, task, seq_len)
    step_fn = _Steps(model, opt, settings, autocast, compiled=_compiles(settings, device))

    def batch():
        x, y = corpus.batch("train", settings.batch_size, seq_len, g) if corpus else TASKS[task.name](task, settings.batch_size, g)
        if device.type == "cuda":  # a copy from pageable memory would wait for the GPU: a host sync every step
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    wall_start = time.perf_counter()
    pending_eval = False
    try:
        # the exclusive lock of a timed window lives on this stack: released at the window's end, and on every
        # way out of the loop (a wall-clock cut inside a window, divergence, any error)
        with contextlib.ExitStack() as timing:
            for step in range(1, steps + 1):
                for group in opt.param_groups:
                    group["lr"] = settings.lr * _schedule(step, steps, settings)
                timed = windows is not None and windows.inside(step)
                if windows is not None and windows.starts(step):
                    timing.enter_context(lock.exclusive())  # drains this process's queue too
                    windows.start()
                with contextlib.nullcontext() if timed else lock.shared():
                    out = step_fn(*batch())
                if windows is not None and windows.ends(step):
                    synchronize(device)
                    windows.stop()
                    timing.close()
                metrics.tokens_trained = step * tokens_per_step
                pending_eval |= step in eval_at
                over_time = settings.seconds is not None and time.perf_counter() - wall_start > settings.seconds
                last = step == steps or over_time
                if timed and not last:  # no host syncs and no evaluation inside the timed windows
                    continue
                timing.close()  # a run cut inside a window gives the lock back before its last evaluation
                loss = out.ce_loss.item() if step % 10 == 0 or pending_eval or last else None
                if loss is not None and not math.isfinite(loss):
                    raise Diverged(f"training loss became {loss} at step {step} of {steps}")
                if on_step is not None and loss is not None:
                    on_step(metrics.tokens_trained, loss)
                if pending_eval or last:
                    with lock.shared():
                        part = eval_batches if last else eval_batches[: max(1, len(eval_batches) // 4)]
                        point = _validation_point(model, part, corpus, task, device, autocast)
                    point["tokens"] = metrics.tokens_trained
                    metrics.history.append(point)
                    pending_eval = False
                    if report is not None:
                        report(dict(point))
                if over_time:
                    break
    finally:
        step_fn.record(metrics)
        lock.close()
    final = metrics.history[-1]
    metrics.val_loss = final["val_loss"]
    if not math.isfinite(metrics.val_loss):
        raise Diverged(f"validation loss is {metrics.val_loss}")
    metrics.perplexity = final.get("perplexity")
    metrics.bits_per_byte = final.get("bits_per_byte")
    metrics.accuracy = final.get("accuracy")
    _record_rate(metrics, windows, steps, settings, tokens_per_step)
    if device.type == "cuda":
        metrics.peak_memory_bytes = torch.cuda.max_memory_allocated(device)
    if weights_path is not None:
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, weights_path)
    if settings.inference:
        lock = DeviceLock(device)
        try:
            metrics.__dict__.update(inference_speed(model, settings.batch_size, seq_len, settings.decode_tokens, vocab, device, dtype, lock))
        finally:
            lock.close()


def _compiles(settings: ProxySettings, device: torch.device) -> bool:
    return settings.compile is True or (settings.compile == "auto" and device.type == "cuda")


def _record_rate(metrics: Metrics, windows: TimingWindows | None, steps: int, settings: ProxySettings, tokens_per_step: int) -> None:
    """train_tokens_per_s from the timed windows; None with the reason when they did not all run (never a
    whole-run rate, which would count compilation and warm-up)."""
    if windows is None:
        metrics.timing_note = (
            f"too short to time: {steps} steps cannot hold the warm-up and {WINDOWS} windows of "
            f"{settings.timing_steps} steps (lower timing_steps or raise tokens)"
        )
        return
    rate = windows.rate(tokens_per_step)
    if rate is None:
        metrics.timing_note = windows.missing()
        return
    metrics.train_tokens_per_s, metrics.train_tokens_per_s_spread = rate


class _Steps:
    """One training step (forward, backward, clip, optimizer), compiled when asked.

    Compiled means each layer and the head compiled on its own, in one graph each (`HybridLM.compile_regions`,
    `fullgraph=True`, fixed shapes): compiling then costs one layer per layer kind, not the whole depth, and the
    shared cache serves every trial holding the same layers. Inductor compiles the forwards at the first step and
    the backwards at its first backward, so the first step is attempted compiled: if compiling fails (a block that
    cannot be traced, a backend error), the step is redone eagerly and the run goes on eagerly, with the reason
    recorded. Evaluation runs the same modules.
    """

    def __init__(self, model: HybridLM, opt: torch.optim.Optimizer, settings: ProxySettings, autocast, compiled: bool) -> None:
        self.model, self.opt, self.settings, self.autocast = model, opt, settings, autocast
        self.compiled = compiled
        self.compile_seconds: float | None = None
        self.error = ""
        self._first = compiled
        if compiled:
            _share_compile_cache()
            # one compiled graph per layer kind: a hybrid may hold more kinds than dynamo's default of 8 per code
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            model.compile_regions(fullgraph=True, dynamic=False)

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        if not self._first:
            return self._step(x, y)
        self._first = False
        start = time.perf_counter()
        try:
            out = self._step(x, y)
            synchronize(x.device)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the compiler raises, the trial goes on eagerly
            lines = str(e).strip().splitlines()
            self.error = f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
            self.compiled = False
            self.model.uncompile_regions()
            self.opt.zero_grad(set_to_none=True)
            return self._step(x, y)
        self.compile_seconds = time.perf_counter() - start
        return out

    def _step(self, x: torch.Tensor, y: torch.Tensor):
        with self.autocast:
            out = self.model(x, y)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return out

    def record(self, metrics: Metrics) -> None:
        metrics.compiled = self.compiled
        metrics.compile_seconds = self.compile_seconds
        metrics.compile_error = self.error


def _share_compile_cache() -> None:
    """Point Inductor's and Triton's on-disk caches at ARCHSEARCH_COMPILE_CACHE when it is set (a study points it
    into its run folder), so a model shape is compiled once per study, not once per trial process; caches set
    explicitly (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR) win."""
    folder = os.environ.get("ARCHSEARCH_COMPILE_CACHE")
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


def _optimizer(model: HybridLM, settings: ProxySettings, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on norms, gains, biases or SSM vectors)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def _schedule(step: int, steps: int, s: ProxySettings) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio: the multiplier of the peak learning rate."""
    warmup = max(1, round(s.warmup * steps))
    if step <= warmup:
        return step / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _eval_batches(settings: ProxySettings, corpus: Corpus | None, task: TaskSpec | None, seq_len: int) -> list:
    """The held-out batches, the same for every trial with these settings (so their losses compare)."""
    tokens = min(settings.eval_tokens, max(settings.tokens // 2, settings.batch_size * seq_len))
    if corpus is not None:
        return list(corpus.val_batches(settings.batch_size, seq_len, tokens))
    g = torch.Generator().manual_seed(10_000 + settings.seed)
    n = max(1, tokens // (settings.batch_size * seq_len))
    return [TASKS[task.name](task, settings.batch_size, g) for _ in range(n)]


@torch.no_grad()
def _validation_point(model: HybridLM, batches: list, corpus: Corpus | None, task: TaskSpec | None, device, autocast) -> dict[str, float]:
    model.eval()
    total, count, correct, scored = 0.0, 0, 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast:
            out = model(x, y)
        n = int((y != -1).sum())
        total += out.ce_loss.item() * n
        count += n
        if task is not None:
            correct += accuracy(out.logits, y) * n
            scored += n
    model.train()
    loss = total / max(count, 1)
    point = {"val_loss": loss, "perplexity": math.exp(min(loss, 700.0))}
    if corpus is not None and corpus.bytes_per_token:
        point["bits_per_byte"] = loss / LN2 / corpus.bytes_per_token
    if task is not None:
        point["accuracy"] = correct / max(scored, 1)
    return point
