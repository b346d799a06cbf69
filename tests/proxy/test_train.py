"""Proxy training: budgets, evaluations, divergence, determinism, throughput and the train command."""

import json
import math
import time

import pytest
import torch

from archsearch import Architecture, BlockSpec, LayerSpec
from archsearch.blocks import REGISTRY
from archsearch.blocks._family import BlockFamily
from archsearch.blocks._layers import Block
from archsearch.cli import main
from archsearch.errors import ArchsearchError
from archsearch.model import HybridLM
from archsearch.proxy import ProxySettings, TaskSpec, run_proxy
from archsearch.proxy import train as train_module
from archsearch.proxy.throughput import DeviceLock, TimingWindows, physical_device

ARCH = Architecture.from_yaml("d_model: 32\nlayers:\n- {mixer: {block: attn, heads: 4}, channel: glu}\n- {mixer: {block: deltanet, heads: 2}, channel: glu}\n")
FAST = dict(seq_len=32, batch_size=8, tokens=16_384, eval_tokens=4096, device="cpu", timing_steps=4)


def test_a_short_run_reports_loss_perplexity_bits_per_byte_and_speed():
    points = []
    m = run_proxy(ARCH, ProxySettings(**FAST, evals=4), report=points.append)
    assert m.status == "ok" and m.tokens_trained == 16_384
    assert len(points) == 4 and points[-1]["val_loss"] == m.val_loss < points[0]["val_loss"] < math.log(256)
    assert m.perplexity == pytest.approx(math.exp(m.val_loss)) and m.bits_per_byte == pytest.approx(m.val_loss / math.log(2))
    assert m.train_tokens_per_s > 0 and m.params == ARCH.cost().params and m.corpus_digest
    assert m.train_tokens_per_s_spread >= 0 and m.timing_note == ""  # three windows of 4 steps, their median
    # where the wall time went: before the first step, in the four evaluations, waiting for the (free) lock
    assert m.setup_seconds > 0 and m.eval_seconds > 0 and m.setup_seconds + m.eval_seconds < m.wall_seconds
    assert 0 <= m.lock_wait_seconds < m.wall_seconds


def test_the_same_seed_gives_the_same_result():
    a, b = run_proxy(ARCH, ProxySettings(**FAST)), run_proxy(ARCH, ProxySettings(**FAST))
    assert a.val_loss == b.val_loss and [p["val_loss"] for p in a.history] == [p["val_loss"] for p in b.history]


def test_a_diverging_run_stops_with_a_status_not_numbers():
    m = run_proxy(ARCH, ProxySettings(**{**FAST, "lr": 1e6, "grad_clip": 1e6}))
    assert m.status == "diverged" and "step" in m.reason and m.val_loss is None


def test_synthetic_tasks_report_accuracy():
    spec = TaskSpec("mqar", vocab_size=32, seq_len=32, num_kv_pairs=4)
    m = run_proxy(ARCH, ProxySettings(task="mqar", synthetic=spec, batch_size=8, tokens=8192, eval_tokens=2048, device="cpu"))
    assert m.status == "ok" and 0 <= m.accuracy <= 1 and m.bits_per_byte is None


def test_a_wall_clock_budget_stops_early():
    m = run_proxy(ARCH, ProxySettings(**{**FAST, "tokens": 10_000_000, "seconds": 1.0}))
    assert m.status == "ok" and m.tokens_trained < 10_000_000 and m.wall_seconds < 30


def test_inference_speeds_are_measured_when_asked():
    m = run_proxy(ARCH, ProxySettings(**FAST, inference=True, decode_tokens=8))
    assert m.prefill_tokens_per_s > 0 and m.decode_tokens_per_s > 0


def test_the_timing_lock_is_exclusive_across_processes(tmp_path):
    import multiprocessing as mp

    lock = DeviceLock("cpu", str(tmp_path))
    ctx = mp.get_context("spawn")
    with lock.exclusive():
        p = ctx.Process(target=_try_shared, args=(str(tmp_path), str(tmp_path / "done")))
        p.start()
        p.join(1.0)
        assert p.is_alive() and not (tmp_path / "done").exists()  # the trainer waits while we time
    p.join(10)
    assert (tmp_path / "done").exists()


def test_the_lock_counts_the_seconds_its_holder_waited(tmp_path):
    import threading

    timer, holder = DeviceLock("cpu", str(tmp_path)), DeviceLock("cpu", str(tmp_path))
    inside = threading.Event()

    def window():
        with timer.exclusive():
            inside.set()
            time.sleep(0.3)

    thread = threading.Thread(target=window)
    thread.start()
    inside.wait(10)
    with holder.shared(keep=False):  # blocked until the timer's window ends
        pass
    thread.join()
    assert holder.waited >= 0.25 and timer.waited < 0.25
    with holder.shared(keep=False):  # nobody in the way: next to nothing more
        pass
    assert holder.waited < 0.25 + 0.3
    holder.close()
    timer.close()


def test_a_shared_holder_keeps_its_lease_until_a_timer_waits(tmp_path):
    import fcntl

    holder, timer = DeviceLock("cpu", str(tmp_path)), DeviceLock("cpu", str(tmp_path))  # two open files: two holders
    with holder.shared():
        pass
    assert holder.holding and not _lock_is_free(tmp_path)  # kept from one step to the next: no release, no sync
    assert not holder.timer_waiting()
    fcntl.flock(timer._turnstile, fcntl.LOCK_EX)  # a timer arrives: it holds the turnstile, then waits for the lock
    assert holder.timer_waiting()
    with pytest.raises(BlockingIOError):
        fcntl.flock(timer._main, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with holder.shared():  # the step in flight ends, and the holder sees the timer
        pass
    assert not holder.holding
    fcntl.flock(timer._main, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the timer has the device
    fcntl.flock(timer._main, fcntl.LOCK_UN)
    fcntl.flock(timer._turnstile, fcntl.LOCK_UN)
    with holder.shared(keep=False):  # an evaluation, before host-side work: released at once
        pass
    assert not holder.holding and _lock_is_free(tmp_path)
    with holder.shared():
        pass
    holder.close()
    assert _lock_is_free(tmp_path)
    timer.close()


def _try_shared(folder, done):
    with DeviceLock("cpu", folder).shared():
        open(done, "w").close()


def test_train_command_prints_metrics_and_writes_json(tmp_path, capsys):
    arch_file = tmp_path / "arch.yaml"
    arch_file.write_text(ARCH.to_yaml())
    out = tmp_path / "m.json"
    code = main(["train", str(arch_file), "--tokens", "8192", "--seq-len", "32", "--batch-size", "8", "--eval-tokens", "1024", "--device", "cpu", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "perplexity" in text
    metrics = json.loads(out.read_text())["metrics"]
    # 32 steps cannot hold a warm-up and three timed windows: no tokens/s, and the reason, rather than a whole-run rate
    assert metrics["status"] == "ok" and metrics["train_tokens_per_s"] is None and "too short" in metrics["timing_note"]


def test_train_command_samples_from_a_space(capsys):
    assert main(["train", "search_spaces/hyena.yaml", "--sample", "1", "--tokens", "2048", "--seq-len", "16", "--batch-size", "4", "--eval-tokens", "256", "--evals", "1", "--device", "cpu"]) == 0
    assert "YYYY" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "fragment"), [
    (["train", "nope.yaml"], "nope.yaml: cannot read"),
    (["train", "search_spaces/open.yaml"], "search_spaces/open.yaml:"),
    (["train", "search_spaces/hyena.yaml", "--sample", "0", "--data", "/no/such"], "/no/such: no such file"),
    (["train", "search_spaces/hyena.yaml", "--sample", "0", "--task", "poetry"], "task: unknown proxy task"),
    (["train", "search_spaces/hyena.yaml", "--sample", "0", "--device", "cuda:3"] if not torch.cuda.is_available() else ["train", "x"], ""),
])
def test_train_command_bad_input_is_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and "Traceback" not in err


# --- timing windows, the device lock, compilation -------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_windows_cover_consecutive_steps_after_the_warm_up_and_rate_is_their_median():
    clock = FakeClock()
    w = TimingWindows.plan(200, 20, clock=clock)
    assert (w.first, w.last) == (21, 80)  # warm-up of steps // 10 = 20 steps, then 3 x 20
    assert [s for s in range(1, 201) if w.starts(s)] == [21, 41, 61]
    assert [s for s in range(1, 201) if w.ends(s)] == [40, 60, 80]
    assert not w.inside(20) and w.inside(21) and w.inside(80) and not w.inside(81)
    for seconds in (2.0, 1.0, 4.0):  # 20 steps of 100 tokens each: 1000, 2000 and 500 tokens/s
        w.start()
        clock.now += seconds
        w.stop()
    median, spread = w.rate(100)
    assert median == pytest.approx(1000.0) and spread == pytest.approx((2000 - 500) / 1000)
    assert w.missing() == ""


def test_unfinished_windows_give_no_rate_and_say_why():
    clock = FakeClock()
    w = TimingWindows(5, 10, clock=clock)
    w.start()
    clock.now += 1.0
    w.stop()
    w.start()  # the second window is cut (a wall-clock budget, an error): never counted
    assert w.rate(64) is None and "1 of 3" in w.missing()
    assert TimingWindows.plan(64, 20) is None  # 64 steps cannot hold a warm-up and three windows of 20


def test_a_run_too_short_to_time_reports_no_rate_rather_than_a_whole_run_rate():
    m = run_proxy(ARCH, ProxySettings(**{**FAST, "tokens": 4096, "timing_steps": 20}))
    assert m.status == "ok" and m.train_tokens_per_s is None and m.train_tokens_per_s_spread is None
    assert "too short" in m.timing_note


def test_a_run_places_itself_and_its_exclusive_hold_on_the_wall_clock():
    """What a study's timeline needs (study/_busy.py): the run's start in Unix time and its exclusive timing hold
    after it, inside the run; an untimed run holds nothing."""
    before = time.time()
    m = run_proxy(ARCH, ProxySettings(**FAST))
    assert m.status == "ok" and m.train_tokens_per_s is not None
    assert before <= m.started_at <= time.time() - m.wall_seconds + 0.01
    assert m.setup_seconds < m.exclusive_from_s < m.exclusive_until_s <= m.wall_seconds
    untimed = run_proxy(ARCH, ProxySettings(**{**FAST, "timing_steps": 0}))
    assert untimed.started_at is not None and untimed.exclusive_from_s is None and untimed.exclusive_until_s is None


def test_timing_steps_zero_times_nothing_and_says_so(monkeypatch):
    from archsearch.proxy import throughput

    def no_exclusive(self):
        raise AssertionError("a run with timing_steps 0 took the exclusive lock")

    monkeypatch.setattr(throughput.DeviceLock, "exclusive", no_exclusive)
    m = run_proxy(ARCH, ProxySettings(**{**FAST, "timing_steps": 0}))
    assert m.status == "ok" and m.train_tokens_per_s is None and m.timing_note == "not timed (timing_steps: 0)"
    with pytest.raises(ArchsearchError, match="timing_steps: expected a whole number"):
        ProxySettings(**{**FAST, "timing_steps": -1})


def _lock_is_free(folder, shared: bool = False) -> bool:
    """Whether another holder could take the device lock now (exclusively, or `shared`)."""
    import fcntl

    with open(folder / "archsearch-cpu.lock", "a+") as f:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def test_a_wall_clock_cut_inside_a_timed_window_releases_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_LOCK_DIR", str(tmp_path))
    # one window from step 2 longer than the run can go: the cut lands inside it
    monkeypatch.setattr(train_module.TimingWindows, "plan", classmethod(lambda cls, steps, size: cls(2, 10_000)))
    m = run_proxy(ARCH, ProxySettings(**{**FAST, "tokens": 10_000_000, "seconds": 1.0}))
    assert m.status == "ok" and m.tokens_trained < 10_000_000
    assert m.train_tokens_per_s is None and "0 of 3" in m.timing_note
    assert _lock_is_free(tmp_path)


def test_an_error_inside_a_timed_window_releases_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHSEARCH_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(train_module.TimingWindows, "plan", classmethod(lambda cls, steps, size: cls(2, 4)))
    step = train_module._Steps._step
    calls = []

    def failing(self, x, y):
        calls.append(1)
        if len(calls) == 4:  # inside the first window (steps 2 to 5)
            assert not _lock_is_free(tmp_path)  # the window holds the lock exclusively ...
            raise RuntimeError("boom")
        return step(self, x, y)

    monkeypatch.setattr(train_module._Steps, "_step", failing)
    with pytest.raises(RuntimeError, match="boom"):
        run_proxy(ARCH, ProxySettings(**FAST))
    assert _lock_is_free(tmp_path)  # ... and gives it back on the way out


def test_an_evaluation_inside_a_timed_window_keeps_the_window_exclusive(tmp_path, monkeypatch):
    # a flock taken for the evaluation on the timer's own file would convert its exclusive lock to a shared one
    monkeypatch.setenv("ARCHSEARCH_LOCK_DIR", str(tmp_path))
    paused, blocked = [], []
    pause, point = TimingWindows.pause, train_module._validation_point

    def pausing(self):
        paused.append(True)
        pause(self)

    def evaluating(*args, **kwargs):
        if paused and paused[-1]:  # an evaluation inside a window: nobody else may step meanwhile
            blocked.append(not _lock_is_free(tmp_path, shared=True))
            paused[-1] = False
        return point(*args, **kwargs)

    monkeypatch.setattr(TimingWindows, "pause", pausing)
    monkeypatch.setattr(train_module, "_validation_point", evaluating)
    m = run_proxy(ARCH, ProxySettings(**FAST))  # 64 steps: windows at 7-18, evaluations every 8 steps
    assert m.status == "ok" and m.train_tokens_per_s is not None
    assert blocked == [True, True]  # the evaluations at steps 8 and 16
    assert _lock_is_free(tmp_path)


def test_the_lock_names_the_physical_device():
    assert physical_device("cpu") == "cpu" and physical_device("cpu:1") == "cpu1"


class _Untraceable(Block):
    """A plugin block with a data-dependent Python branch: it runs eagerly but cannot be traced in one graph."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.w = torch.nn.Linear(d_model, d_model, bias=False)

    def forward(self, x):
        return self.w(x) if bool(x.mean() > -1e9) else x


class _UntraceableFamily(BlockFamily):
    name, role, letter = "untraceable", "mixer", "U"
    params = {}

    def param_count(self, p, d_model):
        return d_model * d_model

    def flops_per_token(self, p, d_model, context):
        return 2.0 * d_model * d_model

    def build(self, p, d_model):
        return _Untraceable(d_model)


def test_a_block_that_cannot_compile_falls_back_to_eager_with_the_reason(monkeypatch):
    monkeypatch.setitem(REGISTRY, "untraceable", _UntraceableFamily())  # a plugin for this test only
    arch = Architecture(32, (LayerSpec(BlockSpec.make("untraceable", {}, 32), BlockSpec.make("glu", {}, 32)),))
    m = run_proxy(arch, ProxySettings(**FAST, compile=True))
    assert m.status == "ok" and not m.compiled and m.compile_seconds is None
    assert "data-dependent" in m.compile_error.lower() or "graph break" in m.compile_error.lower(), m.compile_error
    assert m.val_loss < math.log(256)


class _NaNGradientWhenCompiled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class _NegatedGradientWhenCompiled(_NaNGradientWhenCompiled):
    @staticmethod
    def backward(ctx, grad):
        return -grad  # finite, and wrong: what cuDNN's compiled attention gave the block-recurrent cell


class _BrokenBackwardWhenCompiled(_Untraceable):
    """Right eagerly; compiled, its backward is wrong (as a miscompiled kernel's would be), its forward is right."""

    broken: type[torch.autograd.Function] = _NaNGradientWhenCompiled

    def forward(self, x):
        y = self.w(x)
        return self.broken.apply(y) if torch.compiler.is_compiling() else y


class _BrokenBackwardFamily(_UntraceableFamily):
    name, letter = "broken_backward", "W"

    def __init__(self, broken: type[torch.autograd.Function]) -> None:
        self.broken = broken

    def build(self, p, d_model):
        block = _BrokenBackwardWhenCompiled(d_model)
        block.broken = self.broken
        return block


@pytest.mark.parametrize(("broken", "reason"), [(_NaNGradientWhenCompiled, "non-finite"), (_NegatedGradientWhenCompiled, "away from eager")])
def test_a_compiled_backward_with_wrong_gradients_falls_back_to_eager_before_the_optimizer_takes_them(monkeypatch, aot_eager, broken, reason):
    monkeypatch.setitem(REGISTRY, "broken_backward", _BrokenBackwardFamily(broken))
    arch = Architecture(32, (LayerSpec(BlockSpec.make("broken_backward", {}, 32), BlockSpec.make("glu", {}, 32)),))
    m = run_proxy(arch, ProxySettings(**FAST, compile=True))
    assert m.status == "ok" and not m.compiled and reason in m.compile_error, m.compile_error
    eager = run_proxy(arch, ProxySettings(**FAST))
    assert m.val_loss == pytest.approx(eager.val_loss, rel=1e-5)  # the parameters never took the broken step


def test_a_compiled_run_that_matches_eager_stays_compiled(aot_eager):
    m = run_proxy(ARCH, ProxySettings(**FAST, compile=True))
    assert m.status == "ok" and m.compiled and m.compile_error == ""


class _TrainOnlyTraceable(_Untraceable):
    """Traces in one graph when training; in eval mode, a data-dependent branch."""

    def forward(self, x):
        return self.w(x) if self.training else super().forward(x)


class _TrainOnlyTraceableFamily(_UntraceableFamily):
    name, letter = "train_only_traceable", "V"

    def build(self, p, d_model):
        return _TrainOnlyTraceable(d_model)


@pytest.fixture
def aot_eager(monkeypatch):
    """Compiled runs through the aot_eager backend: Inductor's code generation is minutes on 2 cores, and what these
    tests check is Dynamo's and the proxy's side."""
    compile_regions = HybridLM.compile_regions
    monkeypatch.setattr(HybridLM, "compile_regions", lambda model, mode, **options: compile_regions(model, backend="aot_eager", **options))


def test_a_block_that_compiles_for_training_but_not_for_evaluation_evaluates_eagerly_with_the_reason(monkeypatch, aot_eager):
    monkeypatch.setitem(REGISTRY, "train_only_traceable", _TrainOnlyTraceableFamily())  # a plugin for this test only
    arch = Architecture(32, (LayerSpec(BlockSpec.make("train_only_traceable", {}, 32), BlockSpec.make("glu", {}, 32)),))
    short = {**FAST, "tokens": 4096, "evals": 3, "eval_tokens": 512, "timing_steps": 0}
    m = run_proxy(arch, ProxySettings(**short, compile=True))
    assert m.status == "ok" and m.compiled  # training stayed compiled
    assert m.compile_error.startswith("evaluation, run eagerly: "), m.compile_error
    eager = run_proxy(arch, ProxySettings(**short, compile=False))
    assert len(m.history) == 3 and m.val_loss == pytest.approx(eager.val_loss, rel=1e-4)


ONE_LAYER = Architecture.from_yaml("d_model: 32\nlayers:\n- {mixer: {block: attn, heads: 4}, channel: glu}\n")


def test_a_cuda_graph_mode_marks_each_step_and_trains_as_the_default_mode_off_cuda(monkeypatch):
    modes, marks = [], []
    compile_regions = HybridLM.compile_regions

    def on_aot_eager(model, mode, **options):  # Inductor's code generation is minutes on 2 cores; the step's mechanics are not
        modes.append(mode)
        compile_regions(model, backend="aot_eager", **options)

    monkeypatch.setattr(HybridLM, "compile_regions", on_aot_eager)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    short = {**FAST, "tokens": 4096, "evals": 2, "eval_tokens": 512}
    default = run_proxy(ONE_LAYER, ProxySettings(**short, compile=True, compile_mode="default"))
    assert modes == ["default"] and not marks
    graphs = run_proxy(ONE_LAYER, ProxySettings(**short, compile=True, compile_mode="reduce-overhead"))
    assert modes == ["default", "reduce-overhead"] and default.compiled and graphs.compiled
    assert len(marks) == graphs.tokens_trained // (FAST["batch_size"] * FAST["seq_len"])  # one new CUDA graph step per step
    assert graphs.val_loss == default.val_loss and graphs.history == default.history


class _Replayed:
    """A captured step as the CPU can have one: each replay runs the captured body again on the graph's inputs, its
    gradients written afresh, and checks that the optimizer's state is still the tensors captured (a replay of a
    real graph would update those, whatever the optimizer holds now)."""

    made: list["_Replayed"] = []

    def __init__(self, body, opt, x, y, refuse: str = "") -> None:
        if refuse:
            raise RuntimeError(refuse)
        self.body, self.opt, self.x, self.y, self.replays = body, opt, x.clone(), y.clone(), 0
        self.state = self._state_tensors()
        _Replayed.made.append(self)

    def _state_tensors(self) -> list[int]:
        return [id(t) for s in self.opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]

    def replay(self, x, y):
        assert self._state_tensors() == self.state, "replayed over an optimizer state loaded since the capture"
        self.x.copy_(x), self.y.copy_(y)
        self.opt.zero_grad(set_to_none=True)
        self.replays += 1
        return self.body(self.x, self.y)


@pytest.fixture
def step_graph_on_cpu(monkeypatch):
    """step-graph's capture and replay without CUDA (`_Replayed`), the regions through aot_eager; yields the modes
    the regions compiled in."""
    modes, compile_regions = [], HybridLM.compile_regions

    def on_aot_eager(model, mode, **options):
        modes.append(mode)
        compile_regions(model, backend="aot_eager", **options)

    _Replayed.made.clear()
    monkeypatch.setattr(HybridLM, "compile_regions", on_aot_eager)
    monkeypatch.setattr(train_module, "_StepGraph", _Replayed)
    monkeypatch.setattr(train_module._Steps, "_captures", property(lambda self: self.compiled and self.mode == "step-graph"))
    monkeypatch.setattr(train_module._Steps, "_on_capture_stream", lambda self, step, x, y: step(x, y))  # the stream is CUDA's
    return modes


def test_step_graph_captures_the_third_step_and_replays_it_as_the_default_mode_trains(step_graph_on_cpu):
    short = {**FAST, "tokens": 4096, "evals": 2, "eval_tokens": 512}
    graphed = run_proxy(ONE_LAYER, ProxySettings(**short, compile=True, compile_mode="step-graph"))
    assert step_graph_on_cpu == ["default"] and graphed.compiled and graphed.compile_error == ""
    steps = graphed.tokens_trained // (FAST["batch_size"] * FAST["seq_len"])
    assert len(_Replayed.made) == 1 and _Replayed.made[0].replays == steps - 2  # compiling step, a warm-up, then replays
    default = run_proxy(ONE_LAYER, ProxySettings(**short, compile=True, compile_mode="default"))
    assert graphed.history == default.history and graphed.val_loss == default.val_loss


def test_step_graph_captures_again_after_a_rung_loads_the_optimizers_state(step_graph_on_cpu):
    step = FAST["batch_size"] * FAST["seq_len"]
    ladder = {**FAST, "tokens": 40 * step, "warmup_tokens": 2 * step, "evals": 4, "eval_tokens": 512, "timing_steps": 2}
    graphed = run_proxy(ONE_LAYER, ProxySettings(**ladder, compile=True, compile_mode="step-graph"), rungs=(16 * step, 28 * step))
    assert len(_Replayed.made) == 3  # the first capture, then one after each rung's decay branch went back to the stable state
    default = run_proxy(ONE_LAYER, ProxySettings(**ladder, compile=True, compile_mode="default"), rungs=(16 * step, 28 * step))
    assert [p["val_loss"] for p in graphed.history] == [p["val_loss"] for p in default.history]


def _refused_capture(refused: str, times: int):
    """A `_StepGraph` whose first `times` captures fail as a real one does: the capture's end reports only that a
    previous error happened, raised while the first error is handled."""
    calls = []

    def make(*args):
        calls.append(1)
        if len(calls) > times:
            return _Replayed(*args)
        try:
            raise RuntimeError(refused)
        except RuntimeError:
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")  # noqa: B904 - as torch raises it

    return make


REFUSED = "CUDA error: operation not permitted when stream is capturing"


def test_a_step_that_cannot_be_captured_falls_back_to_cuda_graph_trees_with_the_first_error(step_graph_on_cpu, monkeypatch):
    monkeypatch.setattr(train_module, "_StepGraph", _refused_capture(REFUSED, times=2))
    short = {**FAST, "tokens": 4096, "evals": 2, "eval_tokens": 512}
    m = run_proxy(ONE_LAYER, ProxySettings(**short, compile=True, compile_mode="step-graph"))
    assert step_graph_on_cpu == ["default", "reduce-overhead"] and m.status == "ok" and m.compiled
    assert m.compile_error == "; ".join(f"step-graph, capture {i} of 2: RuntimeError: {REFUSED} (then RuntimeError)" for i in (1, 2)), m.compile_error
    eager = run_proxy(ONE_LAYER, ProxySettings(**short, compile=False))
    assert m.val_loss == pytest.approx(eager.val_loss, rel=1e-4)  # the refused captures ran nothing


def test_a_capture_that_fails_once_is_tried_again_after_a_plain_step(step_graph_on_cpu, monkeypatch):
    monkeypatch.setattr(train_module, "_StepGraph", _refused_capture(REFUSED, times=1))
    short = {**FAST, "tokens": 4096, "evals": 2, "eval_tokens": 512}
    m = run_proxy(ONE_LAYER, ProxySettings(**short, compile=True, compile_mode="step-graph"))
    assert step_graph_on_cpu == ["default"] and m.compile_error.startswith("step-graph, capture 1 of 2: RuntimeError: ")
    steps = m.tokens_trained // (FAST["batch_size"] * FAST["seq_len"])
    assert len(_Replayed.made) == 1 and _Replayed.made[0].replays == steps - 3  # compiling, warm-up, refused capture run plainly
    default = run_proxy(ONE_LAYER, ProxySettings(**short, compile=True, compile_mode="default"))
    assert m.history == default.history


def test_a_compiled_runs_first_evaluation_compiles_outside_the_lock(tmp_path, monkeypatch, aot_eager):
    import contextlib

    monkeypatch.setenv("ARCHSEARCH_LOCK_DIR", str(tmp_path))
    validation_point, free = train_module._validation_point, []

    def recorded(*args):  # whether the device lock was free while each of this evaluation's batches ran
        *rest, hold = args
        inside = []

        @contextlib.contextmanager
        def checked():
            with hold():
                inside.append(_lock_is_free(tmp_path))
                yield

        point = validation_point(*rest, checked)
        assert len(set(inside)) == 1  # the same for every batch
        free.append(inside[0])
        return point

    monkeypatch.setattr(train_module, "_validation_point", recorded)
    short = {**FAST, "tokens": 4096, "evals": 3, "eval_tokens": 512, "timing_steps": 0}
    for compiled in (True, False):
        free.clear()
        m = run_proxy(ONE_LAYER, ProxySettings(**short, compile=compiled))
        assert m.status == "ok" and m.compiled is compiled
        # compiled: the first evaluation compiles (no gradients, eval mode), so no timer waits on it; later ones,
        # and every one of an eager run, hold the shared lock
        assert free == [compiled, False, False], free


def test_nothing_compiles_inside_a_timed_window_inference_speeds_included(monkeypatch, aot_eager):
    import contextlib

    from torch._dynamo.utils import counters

    exclusive, compiled_inside = DeviceLock.exclusive, []

    @contextlib.contextmanager
    def counted(self):
        with exclusive(self):
            before = counters["stats"]["unique_graphs"]
            yield
            compiled_inside.append(counters["stats"]["unique_graphs"] - before)

    monkeypatch.setattr(DeviceLock, "exclusive", counted)
    m = run_proxy(ONE_LAYER, ProxySettings(**{**FAST, "evals": 2, "eval_tokens": 512}, compile=True, inference=True, decode_tokens=4))
    assert m.compiled and m.train_tokens_per_s and m.prefill_tokens_per_s
    assert compiled_inside == [0, 0]  # the three training windows (one hand-over), then the inference timing (it compiled a head once)


def test_a_first_step_that_fails_under_cuda_graphs_compiles_again_without_them(monkeypatch):
    modes = []
    compile_regions = HybridLM.compile_regions

    def graphs_refused(model, mode, **options):  # as a warm worker's second trial on an H200: recording fails
        modes.append(mode)
        if mode != "reduce-overhead":
            return compile_regions(model, backend="aot_eager", **options)
        for layer in model.layers:
            layer.compile(backend=_refuse)

    monkeypatch.setattr(HybridLM, "compile_regions", graphs_refused)
    short = {**FAST, "tokens": 4096, "evals": 2, "eval_tokens": 512}
    m = run_proxy(ONE_LAYER, ProxySettings(**short, compile=True, compile_mode="reduce-overhead"))
    assert modes == ["reduce-overhead", "default"] and m.compiled and m.status == "ok"
    assert m.compile_error.startswith("reduce-overhead: AssertionError: recording refused"), m.compile_error
    eager = run_proxy(ONE_LAYER, ProxySettings(**short, compile=False))
    assert m.val_loss == pytest.approx(eager.val_loss, rel=1e-4)  # the failed step left no trace in the weights


def _refuse(gm, example_inputs):  # compiles, then fails when run: what a graph that cannot be recorded does
    def run(*args):
        raise AssertionError("recording refused")

    return run


def test_compile_mode_is_one_of_torchs_and_a_train_flag(capsys):
    assert ProxySettings().compile_mode == "step-graph"  # one CUDA graph a step: 3.4x reduce-overhead's tokens/s at 16 x 256 on an H200
    with pytest.raises(ArchsearchError, match="^compile_mode: expected one of default, reduce-overhead, max-autotune, "
                                              "max-autotune-no-cudagraphs, step-graph, got 'fast'$"):
        ProxySettings(compile_mode="fast")
    with pytest.raises(SystemExit, match="2"):
        main(["train", "search_spaces/hyena.yaml", "--sample", "0", "--compile-mode", "fast"])
    err = capsys.readouterr().err
    assert "--compile-mode: invalid choice: 'fast'" in err and "step-graph" in err and "True" not in err


def test_compile_accepts_true_false_and_auto():
    assert ProxySettings().compile == "auto" and ProxySettings(compile="false").compile is False
    assert train_module._compiles(ProxySettings(), torch.device("cpu")) is False
    assert train_module._compiles(ProxySettings(), torch.device("cuda")) is True
    assert train_module._compiles(ProxySettings(compile=True), torch.device("cpu")) is True
    with pytest.raises(ArchsearchError, match="compile: expected true, false or auto"):
        ProxySettings(compile="sometimes")


# --- the learning rate's width scaling --------------------------------------------------------------------------------


def test_lr_width_scales_the_peak_down_above_that_width_only():
    s = ProxySettings(lr=4e-3, lr_width=256)
    assert s.for_width(512).lr == pytest.approx(2e-3) and s.for_width(256).lr == 4e-3
    assert s.for_width(128) == ProxySettings(lr=4e-3)  # narrower models keep lr: they train as without lr_width
    assert ProxySettings(lr=4e-3).for_width(4096).lr == 4e-3  # no lr_width: one rate for every width


def test_a_run_with_lr_width_trains_as_one_at_the_scaled_rate():
    # ARCH is 32 wide: with lr_width 16 it must train exactly as a run at half the learning rate
    scaled = run_proxy(ARCH, ProxySettings(**FAST, lr=2e-3, lr_width=16))
    plain = run_proxy(ARCH, ProxySettings(**FAST, lr=1e-3))
    other = run_proxy(ARCH, ProxySettings(**FAST, lr=2e-3))
    assert scaled.status == plain.status == "ok"
    assert scaled.val_loss == pytest.approx(plain.val_loss, rel=1e-6) and scaled.val_loss != pytest.approx(other.val_loss, rel=1e-4)


@pytest.mark.parametrize("value", [0, -256, 1 << 21])
def test_a_bad_lr_width_is_one_line(value):
    with pytest.raises(ArchsearchError, match=r"^lr_width: expected a positive integer"):
        ProxySettings(lr_width=value)


def test_the_validation_loss_weights_each_batch_by_its_scored_tokens():
    import contextlib

    from archsearch.model import build_model

    torch.manual_seed(0)
    model = build_model(ARCH)
    g = torch.Generator().manual_seed(1)
    batches = []
    for masked in (0, 20, 31):  # batches with 32, 12 and 1 scored positions per row
        x = torch.randint(0, ARCH.vocab_size, (2, 32), generator=g)
        y = torch.randint(0, ARCH.vocab_size, (2, 32), generator=g)
        y[:, :masked] = -1
        batches.append((x, y))
    with torch.no_grad():
        losses = [model(x, y).ce_loss.item() for x, y in batches]
    counts = [int((y != -1).sum()) for _, y in batches]
    expected = sum(loss * n for loss, n in zip(losses, counts, strict=True)) / sum(counts)
    point = train_module._validation_point(model, batches, None, None, torch.device("cpu"), contextlib.nullcontext())
    assert point["val_loss"] == pytest.approx(expected, rel=1e-6)
    assert point["val_loss"] != pytest.approx(sum(losses) / len(losses), rel=1e-3)  # not the plain mean of batches
    assert model.training


def test_a_timer_waits_for_one_evaluation_batch_not_the_whole_evaluation(tmp_path):
    import contextlib
    import threading
    from types import SimpleNamespace

    holder, timer = DeviceLock("cpu", str(tmp_path)), DeviceLock("cpu", str(tmp_path))
    done, got, started = [], [], threading.Event()

    class SlowModel:  # 20 batches of 50 ms: a second of evaluation
        training = True

        def eval(self):
            self.training = False

        def train(self):
            self.training = True

        def __call__(self, x, y, keep_logits=False):
            started.set()
            time.sleep(0.05)
            return SimpleNamespace(ce_loss=torch.tensor(1.0))

    batches = [(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))] * 20

    def evaluate():
        train_module._validation_point(SlowModel(), batches, None, None, torch.device("cpu"), contextlib.nullcontext(), holder.shared)
        done.append(time.perf_counter())

    thread = threading.Thread(target=evaluate)
    thread.start()
    started.wait(10)
    with timer.exclusive():
        got.append(time.perf_counter())
        time.sleep(0.2)  # the evaluation is held back meanwhile
    thread.join(10)
    assert got[0] < done[0] - 0.5  # the timer had the device after a batch or two, with most of the evaluation to go
    holder.close()
    timer.close()
