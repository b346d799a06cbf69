"""benchmarks/proxy_fidelity.py's suite runs: each (architecture, task) a job of its own, each finished one logged,
so a rerun trains only the task runs its log lacks, and each architecture's score comes from all its tasks."""

import dataclasses
import importlib
import json
from pathlib import Path

from archsearch import Architecture
from archsearch.proxy import ProxySettings, TaskSpec
from archsearch.proxy.suite import Suite

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ARCHS = [Architecture.from_yaml(f"d_model: 16\nlayers:\n- {{mixer: {{block: {block}, heads: 2}}, channel: glu}}\n") for block in ("attn", "deltanet")]
SUITE = Suite.of([TaskSpec("memorization", vocab_size=16, seq_len=8), TaskSpec("selective_copy", vocab_size=16, seq_len=24, num_tokens=4)],
                 ProxySettings(batch_size=4, tokens=256, eval_tokens=64, evals=1, timing_steps=0, compile=False, device="cpu"))


def test_suite_results_trains_each_task_run_once_and_a_rerun_only_what_its_log_lacks(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # spawned workers get the same path, and import the script by name
    script = importlib.import_module("proxy_fidelity")
    log = tmp_path / "fidelity.suite.jsonl"
    first = script.suite_results(ARCHS[:1], SUITE, 2, log)
    result = first[ARCHS[0].digest]
    assert list(first) == [ARCHS[0].digest] and result["status"] == "ok" and set(result["runs"]) == {"memorization", "selective_copy"}
    accuracies = [result["metrics"]["memorization_accuracy"], result["metrics"]["selective_copy_accuracy"]]
    assert all(0.0 <= a <= 1.0 for a in accuracies) and result["metrics"]["suite_score"] == sum(accuracies) / 2
    lines = log.read_text().splitlines()
    assert len(lines) == 2  # one line per task run
    log.write_text(lines[0] + "\n")  # as if cut after its first task: the rerun trains the other task and the new architecture
    both = script.suite_results(ARCHS, SUITE, 2, log)
    assert "3 of 4 task runs to train (1 in" in capsys.readouterr().out
    kept = json.loads(lines[0])["result"]["metrics"]
    assert all(both[ARCHS[0].digest]["metrics"][k] == v for k, v in kept.items() if k != "suite_score")  # read back, not retrained
    assert sorted(json.loads(line)["digest"] for line in log.read_text().splitlines()) == sorted([ARCHS[0].digest] * 2 + [ARCHS[1].digest] * 2)
    other = Suite((dataclasses.replace(SUITE.runs[0], tokens=512),))
    script.suite_results(ARCHS[:1], other, 1, log)  # other settings: the logged results are not theirs
    assert "1 of 1 task runs to train (0 in" in capsys.readouterr().out
