"""The fidelity ladder's scheduler (MO-ASHA on all objectives) on hand-made rung results."""

from types import SimpleNamespace

import pytest

from archsearch.study import Fidelity, Objective

CONTINUE, STOP = "CONTINUE", "STOP"
OBJECTIVES = (Objective("bits_per_byte", "minimize"), Objective("train_tokens_per_s", "maximize"))


def scheduler(keep=0.5, rungs=(1000, 4000, 16000), seen=()):
    from archsearch.study._ladder import LadderScheduler

    return LadderScheduler(OBJECTIVES, Fidelity(rungs, keep), seen)


def result(sched, name, rung, bpb, rate=None):
    point = {"rung": rung, "tokens": sched.fidelity.rungs[rung], "status": "ok", "bits_per_byte": bpb}
    if rate is not None:
        point["train_tokens_per_s"] = rate
    return sched.on_trial_result(None, SimpleNamespace(trial_id=name), point)


def test_the_first_trial_at_a_rung_is_promoted_even_when_it_is_poor():
    s = scheduler()
    assert result(s, "a", 0, 9.0, 1.0) == CONTINUE
    assert result(s, "a", 1, 9.0) == CONTINUE


def test_a_dominated_trial_is_stopped_and_a_non_dominated_one_promoted():
    s = scheduler(keep=0.67)
    assert result(s, "a", 0, 2.0, 1000.0) == CONTINUE
    assert result(s, "b", 0, 2.5, 900.0) == STOP  # worse on both: dominated by a (one of two goes on)
    assert result(s, "c", 0, 3.0, 5000.0) == CONTINUE  # worse loss, better throughput: on the front with a (two of three)


def test_promotion_ranks_on_all_objectives_not_on_the_loss_alone():
    s = scheduler(keep=0.5)
    for name, bpb, rate in (("a", 2.0, 100.0), ("b", 2.1, 110.0), ("c", 2.2, 120.0)):
        result(s, name, 0, bpb, rate)
    # the worst loss of four (ASHA on the loss would stop it), but the best throughput: an extreme of the front,
    # which crowding distance ranks before its crowded middle (b, c): two of four go on, a and d
    assert result(s, "d", 0, 2.3, 1000.0) == CONTINUE
    assert result(s, "e", 0, 2.4, 90.0) == STOP  # the worst on both


def test_throughput_comes_from_the_first_rung_and_a_missing_value_cannot_be_promoted():
    s = scheduler(keep=0.9)
    assert result(s, "a", 0, 2.0, 1000.0) == CONTINUE
    assert result(s, "b", 0, 1.9) == STOP  # no throughput measured: missing, never promoted
    assert result(s, "a", 1, 1.5) == CONTINUE
    assert s.values[1]["a"] == [1.5, 1000.0]  # the later rung lacks throughput: the first rung's is used
    result(s, "c", 0, 2.1, 800.0)
    result(s, "c", 1, 1.4, 50_000.0)
    assert s.values[1]["c"] == [1.4, 800.0]  # a later measurement does not replace the first rung's


def test_other_results_and_the_top_rung_always_continue():
    s = scheduler()
    result(s, "a", 0, 1.0, 1000.0)
    assert s.on_trial_result(None, SimpleNamespace(trial_id="b"), {"tokens": 500, "val_loss": 9.0}) == CONTINUE
    assert result(s, "b", 2, 9.0, 1.0) == CONTINUE  # the top rung: the trial has finished its budget


def test_rung_points_of_earlier_sessions_rank_new_trials():
    seen = [("session:0", 0, {"bits_per_byte": 1.0, "train_tokens_per_s": 1000.0}),
            ("session:1", 0, {"bits_per_byte": 1.1, "train_tokens_per_s": 1100.0})]
    s = scheduler(keep=0.5, seen=seen)
    assert result(s, "new", 0, 1.5, 900.0) == STOP  # without the earlier sessions it would be the first, promoted


@pytest.mark.parametrize("keep", [0.25, 0.5])
def test_about_keep_of_a_rung_goes_on(keep):
    s = scheduler(keep=keep)
    decisions = [result(s, f"t{i}", 0, 3.0 - 0.01 * i, 1000.0 - i) for i in range(20)]  # a front: each trades off
    assert decisions[0] == CONTINUE
    # asynchronous: each decision is against the trials seen so far, so at least keep's share, not exactly it
    assert keep * 20 * 0.5 <= decisions.count(CONTINUE) < 20


def test_a_trial_resumed_from_a_checkpoint_replaces_the_cut_off_trials_point_at_its_rung():
    seen = [("trial:0", 0, {"bits_per_byte": 1.0, "train_tokens_per_s": 1000.0}),
            ("trial:1", 0, {"bits_per_byte": 2.0, "train_tokens_per_s": 500.0})]  # trial 1 was cut off after rung 0
    s = scheduler(keep=0.5, seen=seen)
    rerun = SimpleNamespace(trial_id="ray-7", config={"trial_number": 7, "checkpoint_of": 1})
    point = {"rung": 0, "tokens": 1000, "status": "ok", "bits_per_byte": 2.0, "train_tokens_per_s": 500.0}
    assert s.on_trial_result(None, rerun, point) == STOP  # dominated by trial 0: one of the two goes on
    assert sorted(s.values[0]) == ["trial:0", "trial:1"]  # still two trials at the rung, not three
