"""Studies end to end on Ray: results, failures, resume after a kill, and joining a running Ray cluster."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest

pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time on a small machine


@pytest.fixture
def ray_shutdown():
    yield
    import ray

    ray.shutdown()


def finished_in_optuna(run_dir):
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    return [t for t in study.get_trials() if t.state.is_finished() and t.user_attrs.get("status") not in ("interrupted", "redrawn", "known")]


def test_a_small_study_fills_the_run_directory(write_study, tmp_path, ray_shutdown, capsys):
    from archsearch.study import run

    run_dir = run(str(write_study(trials=4, concurrency=2)), out=str(tmp_path / "run"))
    table = pd.read_csv(run_dir / "trials.csv")
    assert sorted(table["trial"]) == [0, 1, 2, 3] and set(table["status"]) == {"ok"}
    assert (table["bits_per_byte"] > 0).all() and (table["train_tokens_per_s"] > 0).all()
    # each trial's place on the study's timeline, and its exclusive timing hold inside its run
    assert (table["started_at"] > 1.7e9).all() and (table["exclusive_from_s"] < table["exclusive_until_s"]).all()
    assert (table["exclusive_until_s"] <= table["wall_seconds"]).all()
    assert {"study.yaml", "space.yaml", "optuna.db", "ray", "trials.csv"} <= set(os.listdir(run_dir))
    assert len(finished_in_optuna(run_dir)) == 4
    out = capsys.readouterr().out
    assert "4/4 finished" in out and "best bits_per_byte" in out and "front" in out
    # running again finds every trial done, trains nothing and keeps the table
    run(str(tmp_path / "study.yaml"), out=str(run_dir))
    assert pd.read_csv(run_dir / "trials.csv").equals(table)


def test_a_redrawn_architecture_is_no_trial_and_an_exhausted_space_ends_in_one_line_with_repeats(write_study, tmp_path, ray_shutdown, capsys):
    from archsearch.study import run

    space = "d_model: 32\nn_layers: 1\nlayers: {mixer: {choice: [attn, deltanet, hyena, swa]}, channel: glu, heads: 2, window: 8}\nblocks: {hyena: {filter_width: 8}}\n"
    path = write_study(trials=10, concurrency=2, space=space)
    path.write_text(path.read_text().replace("resources: {cpu: 1}}", "resources: {cpu: 1}, max_draws: 30, repeats: 2}"))
    run_dir = run(str(path), out=str(tmp_path / "run"))
    table = pd.read_csv(run_dir / "trials.csv")
    assert len(table) == 4 and table["digest"].is_unique and set(table["status"]) == {"ok"}  # the space's 4, once each
    assert (table["seed"] == 0).all() and (table["bits_per_byte_n"] == 2).all() and (table["bits_per_byte_std"] >= 0).all()
    exhausted = "study t: stopped after 4 of 10 trials: 30 draws in a row gave architectures measured already"
    assert exhausted in capsys.readouterr().out
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    told = [t for t in study.get_trials() if t.user_attrs.get("status") == "known"]
    assert len(told) >= 30 and all("row" not in t.user_attrs for t in told)
    values = {r["digest"]: [r["bits_per_byte"], r["train_tokens_per_s"]] for _, r in table.iterrows()}
    assert {tuple(t.values) for t in told if t.state == optuna.trial.TrialState.COMPLETE} <= {tuple(v) for v in values.values()}
    assert len(finished_in_optuna(run_dir)) == 4
    # resuming finds the same: no trial trained again, the table kept, the same line
    run(str(path), out=str(run_dir))
    assert pd.read_csv(run_dir / "trials.csv").equals(table) and exhausted in capsys.readouterr().out


def test_a_failing_trial_is_recorded_and_the_study_goes_on(write_study, tmp_path, ray_shutdown):
    from archsearch.study import run

    space = "d_model: 32\nn_layers: 1\nlayers: {mixer: {choice: [attn, crash]}, channel: glu, heads: 2}\n"
    crash = os.path.join(os.path.dirname(__file__), "crash_block.py")
    path = write_study(trials=4, space=space, extra=f"plugins: [{crash}]\n", sampler="grid")
    run_dir = run(str(path), out=str(tmp_path / "run"))
    table = pd.read_csv(run_dir / "trials.csv")
    assert len(table) == 2 and set(table["status"]) == {"ok", "error"}  # the grid has two points
    assert table.loc[table["status"] == "error", "reason"].str.contains("always fails").all()


def test_an_infeasible_architecture_is_recorded_not_trained(write_study, tmp_path, ray_shutdown):
    from archsearch.study import run

    extra = "constraints: {params: {max: 30K}}\n"
    space = "d_model: {choice: [16, 64]}\nn_layers: 1\nlayers: {mixer: attn, channel: glu, heads: 2}\n"
    run_dir = run(str(write_study(trials=4, space=space, extra=extra, sampler="grid")), out=str(tmp_path / "run"))
    table = pd.read_csv(run_dir / "trials.csv")
    assert {"ok", "infeasible"} == set(table["status"])
    assert table.loc[table["status"] == "infeasible", "reason"].str.contains("params").all()


def test_resume_after_a_kill_loses_no_finished_trial_and_duplicates_none(write_study, tmp_path):
    space = "d_model: {choice: [32, 48, 64]}\nn_layers: {choice: [1, 2]}\nlayers: {mixer: {choice: [attn, deltanet, hyena]}, channel: glu, heads: 2}\nblocks: {hyena: {filter_width: 8}}\n"
    study = write_study(trials=6, concurrency=1, space=space, tokens=16384)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "archsearch.cli", "run", str(study), "--out", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        table_file = run_dir / "trials.csv"
        if table_file.exists() and len(pd.read_csv(table_file)) >= 2:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started, mid-study
    proc.wait()
    before = pd.read_csv(run_dir / "trials.csv")
    assert 2 <= len(before) < 6
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    after = pd.read_csv(run_dir / "trials.csv")
    assert len(after) == 6 and after["trial"].is_unique
    kept = after.set_index("trial").loc[before["trial"]]
    pd.testing.assert_frame_equal(kept.reset_index()[before.columns], before, check_dtype=False)
    assert len(finished_in_optuna(run_dir)) == 6
    assert "resuming" in done.stdout


def test_address_joins_an_existing_multi_node_ray_cluster(write_study, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from archsearch.study import run

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        run_dir = run(str(write_study(trials=2, concurrency=2)), out=str(tmp_path / "run"), address=cluster.address)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        assert len(pd.read_csv(run_dir / "trials.csv")) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_an_unreachable_address_is_one_line_and_exit_code_2(write_study, tmp_path, capsys):
    from archsearch.cli import main

    assert main(["run", str(write_study()), "--out", str(tmp_path / "run"), "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --address 127.0.0.1:1: no Ray cluster answers there") and "\n" not in err


def test_a_refused_start_writes_no_run_directory(write_study, tmp_path, capsys):
    from archsearch.cli import main

    space = "d_model: 32\nn_layers: 1\nlayers: {mixer: attn, channel: glu, heads: 2}\nblocks: {attn: {rope_base: {float: [100, 1000]}}}\n"
    path = write_study(space=space, sampler="grid")
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "grid needs a finite space" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["run", str(write_study()), "--out", str(tmp_path / "run"), "--address", "127.0.0.1:1"]) == 2
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("old, new, fragment", [
    ("resources: {cpu: 1}", "resources: {cpu: 1, gpu: 1}", "search.resources.gpu: each trial needs 1, but the Ray cluster has 0 (no CUDA device)"),
    ("resources: {cpu: 1}", "resources: {cpu: 4096}", "search.resources.cpu: each trial needs 4096"),
    ("device: cpu", "device: cuda", "proxy.device: cuda needs a GPU in each trial"),
    ("seq_len: 32, batch_size: 8", "seq_len: 1048576, batch_size: 65536", "proxy: batch_size 65536 x seq_len 1,048,576 needs at least"),
    ("objectives:", "suite: {tasks: {mqar: {seq_len: 1048576, num_kv_pairs: 4, batch_size: 65536}}}\nobjectives:",
     "suite.tasks.mqar: batch_size 65536 x seq_len 1,048,576 needs at least"),  # a suite task's own sizes
])
def test_a_study_the_cluster_cannot_run_is_refused_in_one_line_before_the_run_directory(
        write_study, tmp_path, capsys, ray_shutdown, old, new, fragment):
    from archsearch.cli import main

    path = write_study()
    path.write_text(path.read_text().replace(old, new))
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (Ray may say something of its own first)
    assert last.startswith(f"error: {path}: ") and fragment in last
    assert not (tmp_path / "run").exists()


def test_a_full_disk_ends_in_one_line_and_loses_no_finished_trial(write_study, tmp_path, capsys, monkeypatch, ray_shutdown):
    import errno

    from archsearch.cli import main
    from archsearch.study import RunDir

    writes, original = [], RunDir.write_trials

    def fills_up(self, rows):  # the table write at the start succeeds, the one after the first trial finds no space
        writes.append(len(rows))
        if len(writes) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.trials_file))
        original(self, rows)

    monkeypatch.setattr(RunDir, "write_trials", fills_up)
    path = write_study(trials=3, concurrency=1)
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "No space left on device" in last and "run again to resume" in last
    assert len(finished_in_optuna(tmp_path / "run")) == 1  # the trial whose table write failed is in the storage
    monkeypatch.setattr(RunDir, "write_trials", original)
    import ray

    ray.shutdown()
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    table = pd.read_csv(tmp_path / "run" / "trials.csv")
    # three trials (numbers may skip draws that were not trials: architectures measured already)
    assert sorted(table["trial"]) == sorted(t.number for t in finished_in_optuna(tmp_path / "run")) and len(table) == 3
