"""The synthetic suite: one accuracy metric per task, their mean as the score, failures kept apart from zeros."""

import pytest

from archsearch import Architecture
from archsearch.proxy import ProxySettings, TaskSpec
from archsearch.proxy.suite import SUITES, metric_names, run_suite, suite_specs
from archsearch.proxy.tasks import TaskError

ARCH = Architecture.from_yaml("d_model: 16\nlayers:\n- {mixer: {block: attn, heads: 2}, channel: glu}\n")
TINY = dict(batch_size=4, tokens=256, eval_tokens=64, evals=1, timing_steps=1, device="cpu")
SPECS = [TaskSpec("memorization", vocab_size=16, seq_len=8), TaskSpec("compression", vocab_size=6, seq_len=8)]


def test_a_suite_reports_each_tasks_accuracy_and_their_mean():
    points = []
    r = run_suite(ARCH, ProxySettings(**TINY), SPECS, report=points.append)
    assert r.status == "ok" and list(r.metrics) == ["memorization_accuracy", "compression_accuracy", "suite_score"]
    accs = [r.metrics["memorization_accuracy"], r.metrics["compression_accuracy"]]
    assert all(0 <= a <= 1 for a in accs) and r.metrics["suite_score"] == pytest.approx(sum(accs) / 2)
    assert {p["task"] for p in points} == {"memorization", "compression"}
    # each task trained at its own sizes, not the settings' seq_len
    assert r.runs["compression"][0].tokens_trained == 256 and r.runs["compression"][0].accuracy == r.metrics["compression_accuracy"]
    assert r.to_dict()["metrics"] == r.metrics


def test_a_learning_rate_sweep_keeps_the_best_and_a_diverged_run_counts_as_zero():
    settings = ProxySettings(**TINY, grad_clip=1e6)
    r = run_suite(ARCH, settings, SPECS[:1], lrs=[1e6, 1e-2])
    statuses = [m.status for m in r.runs["memorization"]]
    assert statuses == ["diverged", "ok"] and r.metrics["memorization_accuracy"] == r.runs["memorization"][1].accuracy
    only_diverged = run_suite(ARCH, settings, SPECS[:1], lrs=[1e6])
    assert only_diverged.status == "ok" and only_diverged.metrics == {"memorization_accuracy": 0.0, "suite_score": 0.0}


def test_suites_by_name_and_their_metric_names():
    assert [s.name for s in suite_specs("mad")] == list(SUITES["mad"]) and len(SUITES["mad"]) == 6
    assert metric_names("all")[0] == "mqar_accuracy" and metric_names("all")[-1] == "suite_score"
    assert suite_specs(["mqar"])[0] == TaskSpec("mqar")


@pytest.mark.parametrize(
    ("tasks", "key", "says"),
    [("nope", "proxy.suite", "unknown suite 'nope'"), (["mqar", "nope"], "proxy.suite[1]", "unknown task 'nope'"),
     (["mqar", "mqar"], "proxy.suite", "mqar listed twice"), ([], "proxy.suite", "at least one task")],
)
def test_bad_suites_name_their_key(tasks, key, says):
    with pytest.raises(TaskError) as e:
        suite_specs(tasks)
    assert e.value.key == key and says in e.value.message
