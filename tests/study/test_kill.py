"""kill -9 at many points of a study, then resume: every finished trial is in the table once, with the storage's
values, and a resumed sampler draws anew.

The points: right after a trial's row is stored (before Optuna is told), right after Optuna's commit of a finished
trial, right after a trials table write, and at random times. CI runs one chain of the first three; set
ARCHSEARCH_KILL_POINTS=N to run a chain of N (each point is one killed driver, so allow about 30 s a point).
"""

import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time on a small machine

SPACE = """\
d_model: {int: [32, 128], step: 8}
n_layers: {choice: [1, 2]}
layers: {mixer: {choice: [attn, deltanet, hyena], per_layer: true}, channel: glu, heads: 2}
blocks: {hyena: {filter_width: 8}}
"""
DRIVER = Path(__file__).with_name("kill_driver.py")
POINTS = ["row", "commit", "table", "seconds"]


def storage_trials(run_dir):
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    return study.get_trials()


def check_consistent(run_dir, objectives=("bits_per_byte", "train_tokens_per_s")):
    """The table holds exactly the storage's finished trials, once each, with the storage's values; returns both."""
    trials = storage_trials(run_dir)
    finished = {t.number: t for t in trials if t.state.is_finished() and t.user_attrs.get("status") not in ("interrupted", "redrawn", "known")}
    table = pd.read_csv(run_dir / "trials.csv")
    assert table["trial"].is_unique
    # a kill between Optuna's commit and the table write leaves the table one trial behind, never ahead
    assert set(table["trial"]) <= set(finished)
    assert len(finished) - len(table) <= 1
    for _, row in table.iterrows():
        t = finished[int(row["trial"])]
        assert t.user_attrs["row"]["digest"] == row["digest"]
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert [row[m] for m in objectives] == pytest.approx(t.values)
        else:
            assert row["status"] != "ok" or any(not math.isfinite(row[m]) for m in objectives)
    return finished, table


def test_kill_9_at_many_points_loses_no_finished_trial_and_duplicates_none(write_study, tmp_path):
    n_points = int(os.environ.get("ARCHSEARCH_KILL_POINTS", "3"))
    trials = n_points + 2
    study = write_study(trials=trials, concurrency=1, space=SPACE, tokens=1024)
    run_dir = tmp_path / "run"
    args = ["run", str(study), "--out", str(run_dir)]
    rng = random.Random(0)
    fresh_first_draws = []  # per resumed driver: the parameters of the first trial its sampler drew (not a rerun)
    killed = 0
    for i in range(n_points):
        point = POINTS[i % len(POINTS)]
        k = rng.uniform(8, 30) if point == "seconds" else 2 if point == "table" else 1
        before = {t.number for t in storage_trials(run_dir)} if (run_dir / "optuna.db").exists() else set()
        proc = subprocess.run([sys.executable, str(DRIVER), point, str(k), "--", *args], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
        if proc.returncode == 0:
            break  # the study finished before the point came
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        killed += 1
        if (run_dir / "trials.csv").exists():
            check_consistent(run_dir)
        new = [t for t in storage_trials(run_dir) if t.number not in before and "rerun_of" not in t.user_attrs]
        if before and new:
            fresh_first_draws.append(new[0].params)
    done = subprocess.run([sys.executable, "-m", "archsearch.cli", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    finished, table = check_consistent(run_dir)
    assert len(table) == len(finished) == trials
    assert killed >= min(3, n_points)
    # a sampler seeded again as at the start would draw trial 0's parameters first, on every resume
    first = next(t for t in storage_trials(run_dir) if t.number == 0).params
    assert fresh_first_draws and all(draw != first for draw in fresh_first_draws)
    print(f"kill points {killed}, finished {len(finished)}, table rows {len(table)}, "
          f"lost {len(finished) - len(set(table['trial']))}, duplicated {len(table) - table['trial'].nunique()}")
