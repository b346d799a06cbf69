"""Trials in warm Ray workers: a worker runs trial after trial with the results a fresh process gives, trials on
another node hand every file to the driver's run directory (which no trial's process touches), and a worker killed
mid-trial costs that trial one retry."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pandas as pd
import pytest

pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time on a small machine

HOOKS = Path(__file__).with_name("worker_hooks.py")
FRESH = """\
import json, sys
from archsearch.study import RunDir, Study
from archsearch.study._trial import run_trial
reports = []
run_trial(json.loads(sys.argv[1]), Study.load(sys.argv[2]), RunDir(sys.argv[3]), reports.append)
print(json.dumps(reports[-1]))
"""


@pytest.fixture
def ray_shutdown():
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def hooks(tmp_path, monkeypatch):
    """worker_hooks.py armed for a run directory at tmp_path/run (set before Ray starts: its workers inherit it);
    returns the hooks' log, read as a list of lines."""
    log = tmp_path / "hooks.log"
    monkeypatch.setenv("ARCHSEARCH_TEST_LOG", str(log))
    monkeypatch.setenv("ARCHSEARCH_TEST_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("ARCHSEARCH_TEST_DRIVER_PID", str(os.getpid()))
    return lambda: log.read_text().splitlines() if log.exists() else []


def finished_in_optuna(run_dir):
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    return [t for t in study.get_trials() if t.state.is_finished() and t.user_attrs.get("status") not in ("interrupted", "redrawn", "known")]


def final_results(run_dir):
    """Each trial's last result as Ray Tune recorded it (with the pid of the process that ran it), by trial."""
    from archsearch.study import RunDir

    return {r["config"]["trial_number"]: r for r in RunDir(run_dir)._results() if r.get("status") != "running"}


def test_a_worker_runs_trial_after_trial_with_the_results_of_a_fresh_process(write_study, tmp_path, hooks, ray_shutdown):
    from archsearch.study import run

    path = write_study(trials=3, concurrency=1, tokens=1024, extra=f"plugins: [{HOOKS}]\n")
    run_dir = run(str(path), out=str(tmp_path / "run"))
    results = final_results(run_dir)
    assert sorted(results) == [0, 1, 2] and {r["status"] for r in results.values()} == {"ok"}
    assert len({r["pid"] for r in results.values()}) == 1  # one warm process ran all three
    runs = [line.split() for line in hooks() if line.startswith("run ")]
    assert len(runs) == 3 and len({thread for *_, thread in runs}) == 1  # in one thread (Ray Tune starts one per trial)
    last = results[2]  # run after two other trials in its process
    # Ray's workers run with one thread per CPU asked for: so does the fresh process
    fresh = subprocess.run([sys.executable, "-c", FRESH, json.dumps(last["config"]), str(path), str(tmp_path / "fresh")],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    alone = json.loads(fresh.stdout.splitlines()[-1])
    for key in ("val_loss", "bits_per_byte", "params", "tokens_trained"):
        assert alone[key] == last[key], key


def test_a_study_whose_workers_may_not_stay_warm_runs_each_trial_in_a_fresh_process(write_study, tmp_path, ray_shutdown):
    from archsearch.study import run

    path = write_study(trials=2, concurrency=1, tokens=1024)
    path.write_text(path.read_text().replace("resources: {cpu: 1}", "resources: {cpu: 1}, warm_workers: false"))
    run_dir = run(str(path), out=str(tmp_path / "run"))
    results = final_results(run_dir)
    assert sorted(results) == [0, 1] and {r["status"] for r in results.values()} == {"ok"}
    assert len({r["pid"] for r in results.values()}) == 2


def test_trials_on_another_node_leave_every_file_in_the_drivers_run_directory(write_study, tmp_path, monkeypatch, hooks):
    import ray
    from ray.cluster_utils import Cluster

    from archsearch.study import RunDir, run

    existed = []  # per finished trial: whether its checkpoint was in the run directory when the driver deleted it
    remove = RunDir.remove_checkpoint
    monkeypatch.setattr(RunDir, "remove_checkpoint", lambda self, trial: existed.append(self.checkpoint_file(trial).exists()) or remove(self, trial))
    path = write_study(trials=3, concurrency=2, tokens=4096,
                       extra=f"fidelity: {{rungs: [1024, 2048, 4096], keep: 0.5}}\nplugins: [{HOOKS}]\n")
    path.write_text(path.read_text().replace("resources: {cpu: 1}}", "resources: {cpu: 1}, save_weights: true}")
                    .replace("{train_tokens_per_s: max}", "{params: min}"))  # what every rung measures (too short to time)
    # each node its own temporary folder (short: Ray's socket paths must fit in 107 characters); trials need a CPU,
    # which only the second node has
    temp = [tempfile.mkdtemp(prefix="ray", dir="/tmp") for _ in range(2)]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": temp[0]})
    cluster.add_node(num_cpus=2, temp_dir=temp[1])
    try:
        run_dir = run(str(path), out=str(tmp_path / "run"), address=cluster.address)
        head = cluster.head_node.node_id
    finally:
        ray.shutdown()
        cluster.shutdown()
    table = pd.read_csv(run_dir / "trials.csv")
    assert len(table) == 3 and set(table["status"]) == {"ok"}, table["reason"].tolist()
    lines = hooks()
    assert not [line for line in lines if line.startswith("violation")]
    nodes = {line.split()[2] for line in lines if line.startswith("run ")}
    assert len(nodes) == 1 and head not in nodes  # every trial ran on the second node
    top = table.loc[table["rung"] == 2, "trial"]
    assert len(top) >= 1 and all(RunDir(run_dir).weights_file(int(t)).stat().st_size > 0 for t in top)
    assert existed == [True] * 3 and not list((run_dir / "checkpoints").glob("*"))
    assert len(finished_in_optuna(run_dir)) == 3


def test_a_worker_killed_mid_trial_costs_that_trial_one_retry_and_is_replaced(write_study, tmp_path, monkeypatch, hooks, ray_shutdown):
    from archsearch.study import run

    monkeypatch.setenv("ARCHSEARCH_TEST_KILL", str(tmp_path / "killed"))
    path = write_study(trials=3, concurrency=1, tokens=1024, extra=f"plugins: [{HOOKS}]\n")
    run_dir = run(str(path), out=str(tmp_path / "run"))
    assert (tmp_path / "killed").exists()
    table = pd.read_csv(run_dir / "trials.csv")
    assert sorted(table["trial"]) == [0, 1, 2] and set(table["status"]) == {"ok"}
    assert len(finished_in_optuna(run_dir)) == 3
    runs = [line.split()[1:4] for line in hooks() if line.startswith("run ")]  # (pid, node, digest) per proxy run
    assert len(runs) == 4  # three trials, one of them twice
    (killed_pid, _, killed_digest), retry, *rest = runs
    assert retry[2] == killed_digest and retry[0] != killed_pid  # the same trial again, in a new worker
    assert list(table["digest"]).count(killed_digest) == 1
    assert {r[0] for r in rest} == {retry[0]}  # which runs the trials after it, warm


def test_each_trial_starts_with_no_graph_compiled_by_the_trials_before_it(write_study, tmp_path, monkeypatch):
    import torch
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from archsearch import sample
    from archsearch.proxy import Metrics
    from archsearch.study import RunDir, Study, _trial
    from archsearch.study._trial import run_trial

    def double(x):
        return 2 * x

    compiled = torch.compile(double, backend="eager", dynamic=False)
    entries = []  # per trial: the graphs Dynamo holds for the code when the trial's proxy starts

    def proxy(arch, settings, report=None, save_weights=None):
        entries.append(len(_debug_get_cache_entry_list(double.__code__)))
        for n in range(3):  # a new model's shapes: recompiles of the same code, which Dynamo counts towards a limit
            compiled(torch.ones(n + 3 * len(entries)))
        return Metrics(val_loss=1.0, bits_per_byte=1.0, tokens_trained=256)

    monkeypatch.setattr(_trial, "run_proxy", proxy)
    study = Study.load(write_study())
    arch = sample(study.space, 0)
    for number in range(3):
        config = {"trial_number": number, "arch": arch.to_json(), "digest": arch.digest, "reason": "", "seed": 0}
        run_trial(config, study, RunDir(tmp_path / "run"), lambda result: None)
    assert entries == [0, 0, 0]


def test_workers_stay_warm_by_default_and_the_study_may_ask_for_fresh_ones(write_study):
    from archsearch.errors import ConfigError
    from archsearch.study import Study

    path = write_study()
    assert Study.load(path).search.warm_workers is True  # GPU trials under CUDA graphs too (one thread per worker)
    text = path.read_text()
    path.write_text(text.replace("resources: {cpu: 1}", "resources: {cpu: 1}, warm_workers: false"))
    assert Study.load(path).search.warm_workers is False
    path.write_text(text.replace("resources: {cpu: 1}", "resources: {cpu: 1}, warm_workers: auto"))
    with pytest.raises(ConfigError, match="warm_workers") as error:
        Study.load(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_a_workers_trials_run_one_after_another_in_one_thread_that_hands_back_what_they_raise():
    import threading

    from archsearch.study._trial import TrialThread

    trial_thread, seen = TrialThread(), []
    for _ in range(3):  # each call from a new thread, as Ray Tune makes one per trial
        caller = threading.Thread(target=trial_thread.call, args=(lambda: seen.append(threading.get_ident()),))
        caller.start()
        caller.join()
    assert len(seen) == 3 and len(set(seen)) == 1 and seen[0] != threading.get_ident()

    def stopped():
        raise SystemExit(0)  # how Ray's report stops a trial

    for raised in (SystemExit, ValueError):
        with pytest.raises(raised):
            trial_thread.call(stopped if raised is SystemExit else lambda: int("x"))
    trial_thread.call(lambda: seen.append(threading.get_ident()))  # the thread outlives what its trials raised
    assert seen[-1] == seen[0]
