"""Synthetic tasks in studies: proxy.task names the task and proxy.synthetic holds its settings; the suite runs
alone or beside language modelling; every mistake is one FILE:LINE: KEY line; a trial's row has every proxy's metrics."""

import json
import textwrap

import pandas as pd
import pytest

from archsearch.errors import ConfigError
from archsearch.proxy import TASKS
from archsearch.proxy.suite import SUITES
from archsearch.sampling import sample
from archsearch.study import RunDir, Study
from archsearch.study._rundir import trial_row
from archsearch.study._trial import run_trial

TINY = "tokens: 512, batch_size: 4, evals: 1, eval_tokens: 128, device: cpu, timing_steps: 1"


@pytest.fixture
def load(write_study, tmp_path):
    """Load a study written from `body` (dedented) beside the tiny space; returns the Study."""

    def load_text(body: str) -> Study:
        write_study()  # the space file
        path = tmp_path / "syn.yaml"
        path.write_text("space: space.yaml\n" + textwrap.dedent(body))
        return Study.load(path)

    return load_text


def refused(load, body: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(body)
    assert str(info.value).startswith(f"{info.value.file}:{info.value.line}: ") and "\n" not in str(info.value)
    return info.value


# --- one synthetic task: proxy.task names it, proxy.synthetic holds its settings ------------------------------

def test_the_proxys_seq_len_applies_to_the_task_unless_synthetic_gives_its_own(load):
    # regression: a synthetic block used to train at the task's default length, whatever proxy.seq_len said
    study = load("proxy: {task: mqar, seq_len: 512, synthetic: {num_kv_pairs: 8}}\nobjectives: [accuracy]\n")
    assert study.proxy.synthetic.seq_len == 512 == study.proxy.seq_len and study.proxy.synthetic.num_kv_pairs == 8
    own = load("proxy: {task: mqar, synthetic: {seq_len: 64, vocab_size: 64}}\nobjectives: [accuracy]\n")
    assert own.proxy.synthetic.seq_len == 64 == own.proxy.seq_len and own.proxy.synthetic.num_kv_pairs == 16
    e = refused(load, "proxy:\n  task: mqar\n  seq_len: 512\n  synthetic: {seq_len: 128}\nobjectives: [accuracy]\n")
    assert (e.line, e.key) == (5, "proxy.synthetic.seq_len") and "proxy.seq_len is 512" in e.message


def test_proxy_task_names_the_task_and_a_conflicting_synthetic_name_is_one_line(load):
    # regression: task was ignored in favour of synthetic.name
    e = refused(load, "proxy:\n  task: selective_copy\n  synthetic: {name: mqar}\nobjectives: [accuracy]\n")
    assert (e.line, e.key) == (4, "proxy.synthetic.name") and "proxy.task is selective_copy" in e.message
    assert load("proxy: {task: mqar, synthetic: {name: mqar}}\nobjectives: [accuracy]\n").proxy.synthetic.name == "mqar"
    e = refused(load, "proxy: {synthetic: {name: mqar}}\nobjectives: [val_loss]\n")
    assert e.key == "proxy.synthetic" and "write proxy.task: mqar" in e.message


def test_synthetic_without_a_name_takes_the_task_from_proxy_task(load):
    # regression: a synthetic block without name was a raw TypeError
    study = load("proxy: {task: selective_copy, synthetic: {num_tokens: 4}}\nobjectives: [accuracy]\n")
    assert (study.proxy.task, study.proxy.synthetic.name, study.proxy.synthetic.num_tokens) == ("selective_copy", "selective_copy", 4)


@pytest.mark.parametrize(
    ("proxy", "key", "fragment"),
    [
        # regression: pairs at or above half the vocabulary crashed deep in training
        ("{task: mqar, synthetic: {vocab_size: 64, num_kv_pairs: 32}}", "proxy.synthetic.num_kv_pairs", "vocab_size 64 has 31"),
        # regression: seq_len under 4 times the pairs silently asked fewer queries
        ("{task: mqar, synthetic: {seq_len: 128, num_kv_pairs: 50}}", "proxy.synthetic.num_kv_pairs", "need seq_len >= 200"),
        ("{task: mqar, seq_len: 128, synthetic: {num_kv_pairs: 50}}", "proxy.synthetic.num_kv_pairs", "got seq_len 128"),
        ("{task: selective_copy, seq_len: 20}", "proxy.synthetic.num_tokens", "need seq_len >= 33"),
        ("{task: mqar, synthetic: {num_tokens: 3}}", "proxy.synthetic.num_tokens", "mqar has no such setting"),
        ("{task: mqar, synthetic: {power_a: 0}}", "proxy.synthetic.power_a", "above 0"),
        ("{task: mqar, synthetic: {power_a: steep}}", "proxy.synthetic.power_a", "expected a number"),
        ("{task: mqar, synthetic: {pairs: 3}}", "proxy.synthetic.pairs", "unknown setting"),
        ("{task: mqar, synthetic: 5}", "proxy.synthetic", "expected a mapping"),
        ("{task: poetry}", "proxy.task", "unknown proxy task 'poetry'"),
        ("{task: [mqar, poetry]}", "proxy.task[1]", "unknown task 'poetry'"),
        ("{task: [mqar, mqar]}", "proxy.task[1]", "listed twice"),
        ("{task: suite, seq_len: 64}", "proxy.seq_len", "their own sizes"),
        ("{task: suite, synthetic: {vocab_size: 64}}", "proxy.synthetic", "suite.tasks.TASK"),
    ],
)
def test_bad_task_names_and_settings_are_one_line_at_their_key(load, proxy, key, fragment):
    e = refused(load, f"proxy: {proxy}\nobjectives: [val_loss]\n")
    assert (e.line, e.key) == (2, key) and fragment in e.message, str(e)


# --- the suite ------------------------------------------------------------------------------------------------

def test_the_suite_runs_the_tasks_the_objectives_name_beside_language_modelling(load):
    study = load("objectives: [bits_per_byte: min, mqar_accuracy: max, state_bytes: min]\n")
    assert study.proxy.task == "lm" and not study.suite_only and study.suite.tasks == ("mqar",)
    assert [o.metric for o in study.objectives] == ["bits_per_byte", "mqar_accuracy", "state_bytes"]
    assert load("objectives: [val_loss, suite_score]\n").suite.tasks == SUITES["all"]
    assert load("objectives: [val_loss]\n").suite is None  # nothing asks for it: no suite


def test_proxy_task_suite_or_a_list_makes_the_suite_the_proxy(load):
    study = load(f"proxy: {{task: suite, {TINY}}}\nobjectives: [suite_score, train_tokens_per_s]\n")
    assert study.suite_only and study.suite.tasks == SUITES["all"] and study.proxy == study.suite.runs[0]
    assert all(r.tokens == 512 and r.seq_len == r.synthetic.seq_len == TASKS[r.task].defaults.get("seq_len") for r in study.suite.runs)
    listed = load("proxy: {task: [compression, mqar]}\nobjectives: [compression_accuracy]\n")
    assert listed.suite.tasks == ("compression", "mqar")
    e = refused(load, "proxy: {task: suite}\nobjectives: [bits_per_byte]\n")
    assert e.key == "objectives[0]" and "language-modelling proxy" in e.message
    e = refused(load, "proxy: {task: suite}\nobjectives: [accuracy]\n")
    assert e.key == "objectives[0]" and "TASK_accuracy" in e.message


def test_each_tasks_settings_come_from_the_proxy_then_the_suite_then_its_own(load):
    study = load("""\
        proxy: {tokens: 4096, lr: 0.002, device: cpu}
        suite:
          tokens: 1024
          tasks: {mqar: {vocab_size: 64, seq_len: 32, tokens: 256, compile_mode: default}, compression: {}}
        objectives: [bits_per_byte, suite_score]
        """)
    mqar, compression = study.suite.runs
    assert (mqar.task, mqar.tokens, mqar.lr, mqar.seq_len, mqar.synthetic.num_kv_pairs, mqar.device) == ("mqar", 256, 0.002, 32, 8, "cpu")
    assert (compression.tokens, compression.seq_len) == (1024, 32) and study.proxy.tokens == 4096
    assert (mqar.compile_mode, compression.compile_mode) == ("default", "step-graph")  # a task's own mode, else the proxy's
    swept = load("suite: {tasks: [mqar], lrs: [0.001, 0.01]}\nobjectives: [mqar_accuracy]\n")
    assert swept.suite.lrs == (0.001, 0.01)


@pytest.mark.parametrize(
    ("suite", "line", "key", "fragment"),
    [
        ("suite:\n  tasks: {mqar: {num_kv_pairs: 100}}\n", 3, "suite.tasks.mqar.num_kv_pairs", "need seq_len >= 400"),
        ("suite:\n  tasks:\n    mqar: {vocab_size: 16}\n", 4, "suite.tasks.mqar.num_kv_pairs", "vocab_size 16 has 7"),
        ("suite:\n  tasks:\n    mqar: {bogus: 1}\n", 4, "suite.tasks.mqar.bogus", "unknown setting"),
        ("suite:\n  tasks:\n    mqar: {tokens: 0}\n", 4, "suite.tasks.mqar.tokens", "positive integer"),
        ("suite:\n  tasks: {poetry: {}}\n", 3, "suite.tasks.poetry", "unknown task"),
        ("suite:\n  tasks: [mqar, poetry]\n", 3, "suite.tasks[1]", "unknown task 'poetry'"),
        ("suite:\n  tasks: poetry\n", 3, "suite.tasks", "unknown suite 'poetry'"),
        ("suite:\n  tasks: [compression]\n", 5, "objectives[0]", "mqar among the suite's tasks"),
        ("suite:\n  lr: -1\n", 3, "suite.lr", "above 0"),
        ("suite:\n  lrs: [0.001, 0]\n", 3, "suite.lrs[1]", "above 0"),
        ("suite:\n  lrs: [0.001]\n  lr: 0.01\n", 4, "suite.lr", "drop one"),
        ("suite:\n  seq_len: 64\n", 3, "suite.seq_len", "suite.tasks.TASK.seq_len"),
        ("suite:\n  data: builtin\n", 3, "suite.data", "unknown suite setting"),
        ("suite: [mqar]\n", 2, "suite", "expected a mapping"),
    ],
)
def test_bad_suites_are_one_line_at_their_key(load, suite, line, key, fragment):
    e = refused(load, suite + "objectives:\n  - mqar_accuracy\n")
    assert (e.line, e.key) == (line, key) and fragment in e.message, str(e)


def test_a_study_whose_proxy_is_the_suite_refuses_what_follows_one_model(load):
    e = refused(load, "proxy: {task: suite}\nobjectives: [suite_score]\nfidelity: {rungs: [1M, 4M]}\n")
    assert (e.line, e.key) == (4, "fidelity") and "one model per task" in e.message
    e = refused(load, "proxy: {task: suite}\nobjectives: [suite_score]\nsearch:\n  save_weights: true\n")
    assert (e.line, e.key) == (5, "search.save_weights")


def test_bits_per_byte_with_a_synthetic_proxy_says_how_to_have_both(load):
    e = refused(load, "proxy: {task: mqar}\nobjectives: [bits_per_byte, accuracy]\n")
    assert "language-modelling proxy" in e.message and "mqar_accuracy" in e.message
    e = refused(load, "proxy: {task: mqar}\nobjectives: [accuracy, mqar_accuracy]\n")  # not the task twice
    assert e.key == "objectives[1]" and "reports it as accuracy" in e.message


@pytest.mark.parametrize("body", [
    "proxy: {task: mqar, seq_len: 64, synthetic: {vocab_size: 64}}\nobjectives: [accuracy]\n",
    "proxy: {task: [mqar, compression]}\nsuite: {lrs: [0.001, 0.003], tokens: 256}\nobjectives: [suite_score]\n",
    "suite: {tasks: {mqar: {num_kv_pairs: 8, tokens: 300}}}\nobjectives: [bits_per_byte, mqar_accuracy]\n",
])
def test_the_frozen_study_reads_back_to_the_same_proxies(load, tmp_path, body):
    study = load(body)
    RunDir(tmp_path / "run").freeze(study)
    kept = RunDir(tmp_path / "run").study()
    assert (kept.proxy, kept.suite, kept.suite_only, kept.proxy_key) == (study.proxy, study.suite, study.suite_only, study.proxy_key)
    assert json.dumps(kept.frozen, sort_keys=True, default=str) == json.dumps(study.frozen, sort_keys=True, default=str)


# --- trials ---------------------------------------------------------------------------------------------------

def trial(study: Study, tmp_path) -> dict:
    arch = sample(study.space, 0)
    reports = []
    config = {"trial_number": 0, "arch": arch.to_json(), "digest": arch.digest, "reason": "", "cached": ""}
    run_trial(config, study, RunDir(tmp_path / "run"), reports.append)
    return trial_row(config, reports[-1])


def test_a_trial_row_holds_the_lm_proxys_and_the_suites_metrics(load, tmp_path):
    study = load(f"""\
        proxy: {{seq_len: 16, {TINY}}}
        suite: {{tokens: 256, tasks: {{mqar: {{vocab_size: 16, seq_len: 16, num_kv_pairs: 4}}, compression: {{seq_len: 8}}}}}}
        objectives: [bits_per_byte: min, mqar_accuracy: max, state_bytes: min]
        """)
    row = trial(study, tmp_path)
    assert row["status"] == "ok", row["reason"]
    assert row["bits_per_byte"] > 0 and row["state_bytes"] > 0 and row["tokens_trained"] == 512  # the LM proxy's
    accs = [row["mqar_accuracy"], row["compression_accuracy"]]
    assert all(0 <= a <= 1 for a in accs) and row["suite_score"] == pytest.approx(sum(accs) / 2)
    assert row["accuracy"] is None and row["val_loss"] > 0


def test_a_trial_of_a_suite_study_reports_the_suite_and_every_runs_tokens(load, tmp_path):
    study = load("proxy: {task: suite, tokens: 256, batch_size: 4, evals: 1, eval_tokens: 64, device: cpu, timing_steps: 1}\n"
                 "suite: {tasks: {memorization: {vocab_size: 16, seq_len: 8}, compression: {seq_len: 8}}, lrs: [0.001, 0.01]}\n"
                 "objectives: [suite_score, memorization_accuracy]\n")
    row = trial(study, tmp_path)
    assert row["status"] == "ok", row["reason"]
    assert row["suite_score"] == pytest.approx((row["memorization_accuracy"] + row["compression_accuracy"]) / 2)
    assert row["tokens_trained"] == 4 * 256 and row["accuracy"] is None  # two tasks at two learning rates
    assert row["bits_per_byte"] is None


@pytest.mark.xdist_group("ray")
def test_a_study_with_an_lm_and_a_synthetic_objective_runs_end_to_end(write_study, tmp_path):
    import ray

    from archsearch.study import run

    write_study()
    path = tmp_path / "mixed.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: t
        space: space.yaml
        proxy: {{seq_len: 16, {TINY}}}
        suite: {{tokens: 256, tasks: {{mqar: {{vocab_size: 16, seq_len: 16, num_kv_pairs: 4}}}}}}
        objectives: [bits_per_byte: min, mqar_accuracy: max]
        search: {{sampler: random, seed: 0, trials: 2, concurrency: 1, resources: {{cpu: 1}}}}
        """))
    try:
        run_dir = run(str(path), out=str(tmp_path / "run"))
    finally:
        ray.shutdown()
    table = pd.read_csv(run_dir / "trials.csv")
    assert list(table["status"]) == ["ok", "ok"]
    assert (table["bits_per_byte"] > 0).all() and table["mqar_accuracy"].between(0, 1).all()
    assert table["suite_score"].equals(table["mqar_accuracy"])


def test_validating_a_study_whose_proxy_is_the_suite_is_one_line(load, tmp_path):
    from archsearch.validate import ValidationError, validate

    study = load("proxy: {task: suite}\nobjectives: [suite_score]\n")
    with pytest.raises(ValidationError, match="trains one model per task"):
        validate(study, RunDir(tmp_path / "run"), [])
