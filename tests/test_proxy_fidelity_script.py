"""benchmarks/proxy_fidelity.py's suite runs: one worker process per architecture, each finished one logged, so a
rerun trains only the architectures its log lacks."""

import dataclasses
import importlib
import json
from pathlib import Path

from archsearch import Architecture
from archsearch.proxy import ProxySettings, TaskSpec
from archsearch.proxy.suite import Suite

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ARCHS = [Architecture.from_yaml(f"d_model: 16\nlayers:\n- {{mixer: {{block: {block}, heads: 2}}, channel: glu}}\n") for block in ("attn", "deltanet")]
SUITE = Suite.of([TaskSpec("memorization", vocab_size=16, seq_len=8)],
                 ProxySettings(batch_size=4, tokens=256, eval_tokens=64, evals=1, timing_steps=0, compile=False, device="cpu"))


def test_suite_results_trains_each_architecture_once_and_a_rerun_only_what_its_log_lacks(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # spawned workers get the same path, and import the script by name
    script = importlib.import_module("proxy_fidelity")
    log = tmp_path / "fidelity.suite.jsonl"
    first = script.suite_results(ARCHS[:1], SUITE, 2, log)
    assert list(first) == [ARCHS[0].digest] and first[ARCHS[0].digest]["status"] == "ok"
    assert 0.0 <= first[ARCHS[0].digest]["metrics"]["memorization_accuracy"] <= 1.0
    both = script.suite_results(ARCHS, SUITE, 2, log)
    assert "1 of 2 architectures to train (1 in" in capsys.readouterr().out
    assert both[ARCHS[0].digest] == first[ARCHS[0].digest]  # read back from the log, not trained again
    assert [json.loads(line)["digest"] for line in log.read_text().splitlines()] == [a.digest for a in ARCHS]
    other = Suite((dataclasses.replace(SUITE.runs[0], tokens=512),))
    script.suite_results(ARCHS[:1], other, 1, log)  # other settings: the logged result is not theirs
    assert "1 of 1 architectures to train (0 in" in capsys.readouterr().out
