"""Proxy training: budgets, evaluations, divergence, determinism, throughput and the train command."""

import json
import math

import pytest
import torch

from archsearch import Architecture
from archsearch.cli import main
from archsearch.proxy import ProxySettings, TaskSpec, evaluate
from archsearch.proxy.throughput import DeviceLock

ARCH = Architecture.from_yaml("d_model: 32\nlayers:\n- {mixer: {block: attn, heads: 4}, channel: glu}\n- {mixer: {block: deltanet, heads: 2}, channel: glu}\n")
FAST = dict(seq_len=32, batch_size=8, tokens=16_384, eval_tokens=4096, device="cpu", timing_steps=4)


def test_a_short_run_reports_loss_perplexity_bits_per_byte_and_speed():
    points = []
    m = evaluate(ARCH, ProxySettings(**FAST, evals=4), report=points.append)
    assert m.status == "ok" and m.tokens_trained == 16_384
    assert len(points) == 4 and points[-1]["val_loss"] == m.val_loss < points[0]["val_loss"] < math.log(256)
    assert m.perplexity == pytest.approx(math.exp(m.val_loss)) and m.bits_per_byte == pytest.approx(m.val_loss / math.log(2))
    assert m.train_tokens_per_s > 0 and m.params == ARCH.cost().params and m.corpus_digest


def test_the_same_seed_gives_the_same_result():
    a, b = evaluate(ARCH, ProxySettings(**FAST)), evaluate(ARCH, ProxySettings(**FAST))
    assert a.val_loss == b.val_loss and [p["val_loss"] for p in a.history] == [p["val_loss"] for p in b.history]


def test_a_diverging_run_stops_with_a_status_not_numbers():
    m = evaluate(ARCH, ProxySettings(**{**FAST, "lr": 1e6, "grad_clip": 1e9}))
    assert m.status == "diverged" and "step" in m.reason and m.val_loss is None


def test_synthetic_tasks_report_accuracy():
    spec = TaskSpec("mqar", vocab_size=32, seq_len=32, num_kv_pairs=4)
    m = evaluate(ARCH, ProxySettings(task="mqar", synthetic=spec, batch_size=8, tokens=8192, eval_tokens=2048, device="cpu"))
    assert m.status == "ok" and 0 <= m.accuracy <= 1 and m.bits_per_byte is None


def test_a_wall_clock_budget_stops_early():
    m = evaluate(ARCH, ProxySettings(**{**FAST, "tokens": 10_000_000, "seconds": 1.0}))
    assert m.status == "ok" and m.tokens_trained < 10_000_000 and m.wall_seconds < 30


def test_inference_speeds_are_measured_when_asked():
    m = evaluate(ARCH, ProxySettings(**FAST, inference=True, decode_tokens=8))
    assert m.prefill_tokens_per_s > 0 and m.decode_tokens_per_s > 0


def test_the_timing_lock_is_exclusive_across_processes(tmp_path):
    import multiprocessing as mp

    lock = DeviceLock("cpu", str(tmp_path))
    ctx = mp.get_context("spawn")
    with lock.exclusive():
        p = ctx.Process(target=_try_shared, args=(str(tmp_path), str(tmp_path / "done")))
        p.start()
        p.join(1.0)
        assert p.is_alive() and not (tmp_path / "done").exists()  # the trainer waits while we time
    p.join(10)
    assert (tmp_path / "done").exists()


def _try_shared(folder, done):
    with DeviceLock("cpu", folder).shared():
        open(done, "w").close()


def test_train_command_prints_metrics_and_writes_json(tmp_path, capsys):
    arch_file = tmp_path / "arch.yaml"
    arch_file.write_text(ARCH.to_yaml())
    out = tmp_path / "m.json"
    code = main(["train", str(arch_file), "--tokens", "8192", "--seq-len", "32", "--batch-size", "8", "--device", "cpu", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "perplexity" in text
    metrics = json.loads(out.read_text())["metrics"]
    # 32 steps cannot hold a warm-up and three timed windows: no tokens/s, and the reason, rather than a whole-run rate
    assert metrics["status"] == "ok" and metrics["train_tokens_per_s"] is None and "too short" in metrics["timing_note"]


def test_train_command_samples_from_a_space(capsys):
    assert main(["train", "search_spaces/hyena.yaml", "--sample", "1", "--tokens", "2048", "--seq-len", "16", "--batch-size", "4", "--device", "cpu"]) == 0
    assert "YYYY" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "fragment"), [
    (["train", "nope.yaml"], "nope.yaml: cannot read"),
    (["train", "search_spaces/open.yaml"], "search_spaces/open.yaml:"),
    (["train", "search_spaces/hyena.yaml", "--sample", "0", "--data", "/no/such"], "/no/such: no such file"),
    (["train", "search_spaces/hyena.yaml", "--sample", "0", "--task", "poetry"], "task: unknown proxy task"),
    (["train", "search_spaces/hyena.yaml", "--sample", "0", "--device", "cuda:3"] if not torch.cuda.is_available() else ["train", "x"], ""),
])
def test_train_command_bad_input_is_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err and "Traceback" not in err
