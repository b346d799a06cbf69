"""Studies with a fidelity ladder end to end on Ray, with a fake trainer (tests/study/fake_ladder_trainer.py) that
speaks the ladder API: rows carry their rung, Optuna prunes below the top, the front is the top rung's, a trial
resumes from its checkpoint, and a killed study resumes without losing a finished trial."""

import importlib.util
import json
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest

pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time on a small machine

FAKE = Path(__file__).with_name("fake_ladder_trainer.py")
DRIVER = Path(__file__).with_name("kill_driver.py")
LADDER = f"fidelity: {{rungs: [1024, 2048, 4096], keep: 0.34}}\nplugins: [{FAKE}]\n"


@pytest.fixture
def ladder_study(write_study, monkeypatch, tmp_path):
    from archsearch.study import _trial

    monkeypatch.setattr(_trial, "run_proxy", _trial.run_proxy)  # loading the study imports the fake, which replaces it
    monkeypatch.setenv("FAKE_LADDER_LOG", str(tmp_path / "fake_runs.txt"))  # Ray's workers inherit it
    def write(trials, concurrency=2):
        path = write_study(trials=trials, concurrency=concurrency, tokens=4096, extra=LADDER)
        path.write_text(path.read_text().replace("{train_tokens_per_s: max}", "{params: min}"))  # what every rung measures
        return path

    return write


@pytest.fixture
def ray_shutdown():
    yield
    import ray

    ray.shutdown()


def storage_trials(run_dir):
    return optuna.load_study(study_name="t", storage=f"sqlite:///{run_dir / 'optuna.db'}").get_trials()


def test_a_ladder_study_records_rungs_prunes_below_the_top_and_fronts_the_top(ladder_study, tmp_path, ray_shutdown, capsys):
    from archsearch.cli.front import describe
    from archsearch.front import compute_front
    from archsearch.study import load_run, run

    run_dir = run(str(ladder_study(trials=8)), out=str(tmp_path / "run"))
    table = pd.read_csv(run_dir / "trials.csv")
    assert len(table) == 8 and set(table["status"]) == {"ok"} and set(table["rung"]) <= {0, 1, 2}
    # the first trial at a rung always goes on, and of two at a rung only one: some stop, some reach the top
    assert (table["rung"] == 2).any() and (table["rung"] < 2).any()
    budgets = table["rung"].map({0: 1024, 1: 2048, 2: 4096})
    assert (table["tokens_trained"] == budgets).all()  # a stopped trial's row is its rung's result
    assert table["bits_per_byte"].notna().all() and table["train_tokens_per_s"].notna().all()  # the fake times every rung
    states = {t.number: t for t in storage_trials(run_dir)}
    for _, row in table.iterrows():
        t = states[int(row["trial"])]
        if row["rung"] == 2:
            assert t.state == optuna.trial.TrialState.COMPLETE and t.values == pytest.approx([row["bits_per_byte"], row["params"]])
        else:
            assert t.state == optuna.trial.TrialState.PRUNED
    front = compute_front(load_run(run_dir))
    assert set(front.candidates["trial"]) == set(table.loc[table["rung"] == 2, "trial"])
    assert "rung" in front.table().columns
    text = "\n".join(describe(front))
    n0, n1 = (int((table["rung"] == r).sum()) for r in (0, 1))
    assert f"{n0} ok trials stopped at rung 0 (1.0K tokens), {n1} ok trials stopped at rung 1 (2.0K tokens)" in text
    assert not list((run_dir / "checkpoints").glob("*"))  # every trial's checkpoint is deleted as it finishes
    assert "ok (stopped at rung " in capsys.readouterr().out
    starts = [line.split()[1] for line in (tmp_path / "fake_runs.txt").read_text().splitlines()]
    assert len(starts) == len(table) and set(starts) == {"fresh"}


def test_a_trial_passes_its_checkpoint_and_resumes_past_the_rungs_it_saved(ladder_study, tmp_path):
    from archsearch.sampling import sample
    from archsearch.study import RunDir, Study
    from archsearch.study._trial import run_trial

    study = Study.load(ladder_study(trials=1))
    spec = importlib.util.spec_from_file_location("fake_ladder_trainer", FAKE)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # the fake, in this process (undone after the test)
    arch = sample(study.space, 0)
    # trial 3 runs again trial 1, which a kill cut off after its rung 0
    config = {"trial_number": 3, "arch": arch.to_json(), "digest": arch.digest, "reason": "", "cached": "", "checkpoint_of": 1}
    run_dir = RunDir(tmp_path / "run")
    run_dir.save_checkpoint(1, json.dumps({"rung": 0}).encode())
    reports = []
    run_trial(config, study, run_dir, reports.append)
    assert [r.get("rung") for r in reports] == [0, 1, 2]  # rung 0 again (promotion decides again), then on from there
    assert reports[1]["status"] == "ok" and reports[1]["tokens_trained"] == 2048  # a rung point is that rung's result
    assert reports[-1]["status"] == "ok" and reports[-1]["tokens_trained"] == 4096
    assert (tmp_path / "fake_runs.txt").read_text().split() == [arch.digest, "0"]
    assert json.loads(run_dir.load_checkpoint(1)) == {"rung": 1}  # saved through the run directory at each rung


def test_a_killed_ladder_study_resumes_without_losing_a_finished_trial(ladder_study, tmp_path):
    study = ladder_study(trials=6)
    run_dir = tmp_path / "run"
    args = ["run", str(study), "--out", str(run_dir)]
    # killed right after the second trial's row is stored, before Optuna is told of it
    proc = subprocess.run([sys.executable, str(DRIVER), "row", "2", "--", *args], start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    rows_before = {t.number: t.user_attrs["row"] for t in storage_trials(run_dir) if "row" in t.user_attrs}
    assert len(rows_before) == 2
    done = subprocess.run([sys.executable, "-m", "archsearch.cli", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(run_dir / "trials.csv").set_index("trial")
    # draws that were no trial (infeasible or measured already: asked again) and cut-off trials do not count
    finished = [t for t in storage_trials(run_dir) if t.state.is_finished() and t.user_attrs.get("status") not in ("interrupted", "redrawn", "known")]
    assert len(table) == len(finished) == 6 and table.index.is_unique
    for number, row in rows_before.items():  # each finished trial kept, with its rung and its values
        assert table.loc[number, "rung"] == row["rung"] and table.loc[number, "bits_per_byte"] == pytest.approx(row["bits_per_byte"])
    assert set(table["rung"]) <= {0, 1, 2} and (table["rung"] == 2).any()
    assert not list((run_dir / "checkpoints").glob("*"))


def test_a_trial_queued_again_after_a_kill_resumes_from_the_cut_off_trials_checkpoint(ladder_study):
    from archsearch.study import Study
    from archsearch.study._optuna_ray import DefineByRun, recover

    study = Study.load(ladder_study(trials=2))
    ostudy = optuna.create_study(directions=["minimize", "maximize"])
    define = DefineByRun(study, [])
    config = define(ostudy.ask())
    digest = config["digest"]
    assert config["checkpoint_of"] == 0
    for _ in range(2):  # the driver dies twice while the trial (then its rerun) runs
        recover(ostudy, study)
        rerun = ostudy.ask()
        config = define(rerun)
        assert rerun.user_attrs["rerun_of"] == rerun.number - 1 and config["checkpoint_of"] == 0
        assert config["digest"] == digest


def test_a_real_tiny_ladder_study_trains_on_from_each_rung_and_fronts_the_top(write_study, tmp_path, ray_shutdown):
    from archsearch.front import compute_front
    from archsearch.study import load_run, run

    path = write_study(trials=4, tokens=16384, extra="fidelity: {rungs: [4096, 8192, 16384], keep: 0.5}\n")
    run_dir = run(str(path), out=str(tmp_path / "run"))
    table = pd.read_csv(run_dir / "trials.csv")
    assert len(table) == 4 and set(table["status"]) == {"ok"} and (table["rung"] == 2).any()
    assert table["train_tokens_per_s"].notna().all()  # timed in the first rung, so every rung ranks on it
    assert (table["tokens_trained"] == table["rung"].map({0: 4096, 1: 8192, 2: 16384})).all()
    states = {t.number: t.state for t in storage_trials(run_dir)}
    assert all((states[t] == optuna.trial.TrialState.COMPLETE) == (r == 2) for t, r in zip(table["trial"], table["rung"], strict=True))
    assert set(compute_front(load_run(run_dir)).candidates["rung"]) == {2}
    assert not list((run_dir / "checkpoints").glob("*"))
