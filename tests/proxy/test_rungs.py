"""The learning-rate schedules, the fidelity ladder's rungs and checkpoints, and what a run records."""

import dataclasses

import pytest

from archsearch import Architecture
from archsearch.errors import ArchsearchError
from archsearch.proxy import ProxySettings, run_proxy
from archsearch.proxy.schedule import Schedule
from archsearch.proxy.throughput import TimingWindows

ARCH = Architecture.from_yaml("d_model: 32\nlayers:\n- {mixer: {block: attn, heads: 4}, channel: glu}\n- {mixer: {block: deltanet, heads: 2}, channel: glu}\n")
STEP = 8 * 32  # tokens per step of FAST
FAST = ProxySettings(seq_len=32, batch_size=8, tokens=40 * STEP, eval_tokens=4 * STEP, device="cpu", timing_steps=2,
                     warmup_tokens=2 * STEP, evals=4)
RUNGS = (16 * STEP, 28 * STEP)


class Kept:
    """A checkpoint kept in memory (a study keeps its trials' in the run directory, on the driver's side)."""

    def __init__(self) -> None:
        self.data: bytes | None = None

    def load(self) -> bytes | None:
        return self.data

    def save(self, data: bytes) -> None:
        self.data = data


def test_wsd_warms_up_holds_then_decays_to_the_floor():
    s = Schedule.plan("wsd", 100, warmup_steps=10, decay_share=0.2, min_ratio=0.1)
    assert s(5) == 0.5 and s(10) == 1.0 and s(50) == s(80) == 1.0 and s.stable_end == 80
    assert s(90) == pytest.approx(0.55) and s(100) == pytest.approx(0.1)
    assert all(s(i + 1) <= s(i) for i in range(80, 100))


def test_runs_of_two_budgets_share_their_schedule_until_the_shorter_decays():
    short, long = (Schedule.plan("wsd", n, 10, 0.2, 0.1) for n in (100, 1000))
    assert [short(i) for i in range(1, 81)] == [long(i) for i in range(1, 81)]
    cosine = Schedule.plan("cosine", 100, 10, 0.2, 0.1)
    assert cosine(10) == 1.0 and cosine(100) == pytest.approx(0.1) and cosine(55) < 1.0
    assert Schedule.plan("constant", 100, 10, 0.2, 0.1)(100) == 1.0


def test_phases_are_clamped_so_each_holds_a_step():
    s = Schedule.plan("wsd", 4, warmup_steps=50, decay_share=0.9, min_ratio=0.0)
    assert s.warmup == 3 and s.decay == 1 and s(4) == 0.0


def test_a_ladder_stopped_at_its_first_rung_gives_the_run_of_that_budget():
    plain = run_proxy(ARCH, dataclasses.replace(FAST, tokens=RUNGS[0]))
    points = []
    stopped = run_proxy(ARCH, FAST, report=lambda p: points.append(p) or "rung" not in p, rungs=RUNGS)
    assert stopped.status == "ok" and stopped.rung == 0 and stopped.tokens_trained == RUNGS[0]
    assert stopped.val_loss == pytest.approx(plain.val_loss, abs=1e-6)
    assert points[-1]["rung"] == 0 and points[-1]["tokens"] == RUNGS[0]
    assert stopped.train_tokens_per_s > 0  # timed inside the first rung


def test_a_ladder_continued_from_its_checkpoint_gives_the_uninterrupted_run():
    checkpoint = Kept()
    first = run_proxy(ARCH, FAST, report=lambda p: "rung" not in p, rungs=RUNGS, checkpoint=checkpoint)
    assert first.rung == 0
    points = []
    continued = run_proxy(ARCH, FAST, report=points.append, rungs=RUNGS, checkpoint=checkpoint)
    uninterrupted = run_proxy(ARCH, FAST, rungs=RUNGS)
    assert continued.rung == uninterrupted.rung == 2 and continued.tokens_trained == FAST.tokens
    assert continued.val_loss == pytest.approx(uninterrupted.val_loss, abs=1e-6)
    assert [p.get("rung") for p in points if "rung" in p] == [0, 1, 2]  # the resumed rung reported again, once
    rung_losses = [p["val_loss"] for p in uninterrupted.history if "rung" in p]
    assert rung_losses == sorted(rung_losses, reverse=True)


def test_a_checkpoint_of_other_settings_is_not_resumed():
    checkpoint = Kept()
    run_proxy(ARCH, FAST, report=lambda p: "rung" not in p, rungs=RUNGS, checkpoint=checkpoint)
    other = dataclasses.replace(FAST, lr=1e-3)
    resumed = run_proxy(ARCH, other, rungs=RUNGS, checkpoint=checkpoint)
    fresh = run_proxy(ARCH, other, rungs=RUNGS)
    assert resumed.val_loss == pytest.approx(fresh.val_loss, abs=1e-6)


def test_rungs_must_be_distinct_budgets_below_the_run():
    with pytest.raises(ArchsearchError, match="rungs: expected distinct budgets"):
        run_proxy(ARCH, FAST, rungs=(10 * STEP, 10 * STEP + 1))


def test_the_held_out_set_is_the_same_whatever_the_budget():
    small, large = (run_proxy(ARCH, dataclasses.replace(FAST, tokens=t, evals=1, lr=1e-9)) for t in (STEP, 40 * STEP))
    # at a learning rate of ~0 both models are the initial one: the same loss means the same held-out text
    assert small.val_loss == pytest.approx(large.val_loss, rel=1e-4)


def test_the_history_records_the_training_loss_and_every_evaluation_inside_the_timed_windows():
    settings = dataclasses.replace(FAST, tokens=30 * STEP, evals=30, timing_steps=5)
    m = run_proxy(ARCH, settings)
    assert len(m.history) == 30 and [p["tokens"] for p in m.history] == [STEP * (i + 1) for i in range(30)]
    assert all(p["train_loss"] > 0 for p in m.history)
    assert m.train_tokens_per_s > 0 and m.timing_note == ""


def test_a_wall_clock_cut_is_marked():
    cut = run_proxy(ARCH, dataclasses.replace(FAST, tokens=10_000 * STEP, seconds=0.5))
    whole = run_proxy(ARCH, FAST)
    assert cut.cut and cut.tokens_trained < 10_000 * STEP and not whole.cut


def test_bits_per_byte_is_extrapolated_when_asked():
    m = run_proxy(ARCH, dataclasses.replace(FAST, predict_tokens=400 * STEP))
    assert m.predicted_bits_per_byte is not None and m.predicted_bits_per_byte < m.bits_per_byte
    assert run_proxy(ARCH, FAST).predicted_bits_per_byte is None


def test_a_paused_window_leaves_the_evaluation_out():
    now = [0.0]
    w = TimingWindows(first=1, size=2, count=1, clock=lambda: now[0])
    w.start()
    now[0] = 1.0
    w.pause()
    now[0] = 11.0
    w.resume()
    now[0] = 12.0
    w.stop()
    assert w.seconds == [2.0]
