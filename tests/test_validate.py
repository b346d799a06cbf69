"""`archsearch validate`: the report on a tiny study end to end, resume of a killed validation, the front's line, and
bad input."""

import dataclasses
import textwrap

import numpy as np
import pytest

from archsearch.cli import main
from archsearch.curves import PowerLaw
from archsearch.proxy import Metrics
from archsearch.study import RunDir, Study
from archsearch.validate import (
    cpu_share,
    describe,
    draw_architectures,
    front_line,
    open_run_dir,
    run_architectures,
    train_parallel,
    validate,
)

SPACE = """\
name: tiny
d_model: {choice: [16, 32]}
n_layers: {choice: [1, 2]}
layers:
  mixer: attn
  channel: {choice: [glu, none]}
blocks:
  attn: {heads: 2}
"""


@pytest.fixture
def study_file(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent("""\
        name: t
        space: space.yaml
        proxy: {tokens: 256, seq_len: 16, batch_size: 4, evals: 4, eval_tokens: 128, device: cpu, timing_steps: 2}
        objectives: [{bits_per_byte: min}, {train_tokens_per_s: max}]
        """))
    return path


# --- validation --------------------------------------------------------------------------------------------------------


def test_validate_on_a_tiny_study_stores_tau_and_the_front_prints_it(study_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["validate", str(study_file), "--archs", "3", "--factor", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = RunDir(out).read_validation()
    assert report["compared"] == 3 and report["metric"] == "bits_per_byte" and report["long_tokens"] == 512
    tau = report["agreement"]["kendall_tau"]["value"]
    assert -1 <= tau <= 1 and f"Kendall tau {tau:.2f}" in printed
    rows = report["architectures"]
    assert all(r["long"] < r["proxy"] for r in rows)  # twice the tokens learn more
    assert all(r["predicted"] is not None for r in rows) and "extrapolation" in report
    assert report["intermediate"] and all(-1 <= p["kendall_tau"] <= 1 for p in report["intermediate"])
    assert len(RunDir(out).validation_records()) == 6
    assert front_line(report, Study.load(study_file)).startswith(f"proxy validated: Kendall tau {tau:.2f}")


def _fake_train(calls):
    """A trainer whose loss curve is a known power law per architecture (fast; what validate does with results)."""

    def train(arch, settings, on_step):
        calls.append((arch.digest, settings.tokens))
        law = PowerLaw(1.0 + arch.cost().params * 1e-6, 50.0, 0.4, True)
        history = [{"tokens": t, "val_loss": float(law(t)), "bits_per_byte": float(law(t))} for t in np.linspace(settings.tokens / 4, settings.tokens, 4)]
        on_step(settings.tokens, 1.0)
        return Metrics(bits_per_byte=history[-1]["bits_per_byte"], val_loss=history[-1]["val_loss"], tokens_trained=settings.tokens, history=history)

    return train


def test_a_killed_validation_reruns_only_the_unfinished_trainings(study_file, tmp_path):
    study = Study.load(study_file)
    run_dir = open_run_dir(study, tmp_path / "run")
    archs = draw_architectures(study, 4)
    calls = []

    def killed_on_the_fourth(arch, settings, on_step):
        if len(calls) == 3:
            raise KeyboardInterrupt
        return _fake_train(calls)(arch, settings, on_step)

    with pytest.raises(KeyboardInterrupt):
        validate(study, run_dir, archs, factor=10, progress=False, train=killed_on_the_fourth)
    assert len(run_dir.validation_records()) == 3 and not run_dir.validation_file.exists()
    with open(run_dir.validation_records_file, "rb+") as f:  # the third record was cut off mid-write
        f.truncate(run_dir.validation_records_file.stat().st_size - 20)
    assert len(run_dir.validation_records()) == 2
    calls.clear()
    report = validate(study, run_dir, archs, factor=10, progress=False, train=_fake_train(calls))
    assert len(calls) == 6  # 8 trainings, 2 kept
    assert report["compared"] == 4 and report["agreement"]["kendall_tau"]["value"] == pytest.approx(1.0)
    assert report["extrapolation"]["mean_abs_error"] < 1e-3  # exact power laws extrapolate exactly
    calls.clear()
    validate(study, run_dir, archs, factor=10, progress=False, train=_fake_train(calls))
    assert calls == [] and len(run_dir.validation_records()) == 8


def test_a_study_with_repeats_is_validated_on_the_mean_of_its_seeds(study_file, tmp_path):
    study = Study.load(study_file)
    study = dataclasses.replace(study, search=dataclasses.replace(study.search, repeats=3))
    archs = draw_architectures(study, 3)
    calls = []

    def noisy(arch, settings, on_step):  # each seed off the architecture's law by its own amount
        m = _fake_train(calls)(arch, settings, on_step)
        return dataclasses.replace(m, bits_per_byte=m.bits_per_byte + 0.01 * (settings.seed - 1))

    report = validate(study, open_run_dir(study, tmp_path / "run"), archs, factor=10, progress=False, train=noisy)
    assert len(calls) == 3 * 4 and report["repeats"] == 3  # three seeds at the proxy's budget, one long run each
    law = _fake_train([])
    for arch, row in zip(archs, report["architectures"], strict=True):
        exact = law(arch, study.proxy, lambda *a: None).bits_per_byte
        assert row["proxy"] == pytest.approx(exact)  # seeds 0, 1, 2: offsets -0.01, 0, +0.01 average out
    assert report["settings"]["proxy"] == study.proxy_key
    assert describe(report)[0].startswith("validation of t's proxy: bits_per_byte at 256 tokens (mean of 3 seeds) against 2,560")


def test_long_repeats_make_the_reference_a_mean_over_seeds_and_report_how_the_seeds_agree(study_file, tmp_path):
    from scipy.stats import kendalltau

    study = Study.load(study_file)
    archs = draw_architectures(study, 4)
    calls, law = [], _fake_train([])
    long_budget = study.proxy.tokens * 10
    exact = [law(a, dataclasses.replace(study.proxy, tokens=long_budget), lambda *a: None).bits_per_byte for a in archs]
    # seed 1 of the long runs moves each architecture by its own amount, enough to reorder some of them
    shift = dict(zip([a.digest for a in archs], [0.3, -0.2, 0.1, -0.4], strict=True))

    def noisy_long(arch, settings, on_step):
        m = _fake_train(calls)(arch, settings, on_step)
        moved = settings.tokens == long_budget and settings.seed == study.proxy.seed + 1
        return dataclasses.replace(m, bits_per_byte=m.bits_per_byte + (shift[arch.digest] if moved else 0.0))

    report = validate(study, open_run_dir(study, tmp_path / "run"), archs, factor=10, progress=False, train=noisy_long, long_repeats=2)
    assert sorted(t for _, t in calls) == [study.proxy.tokens] * 4 + [long_budget] * 8  # one proxy, two long seeds each
    assert report["long_repeats"] == 2
    second = [v + shift[a.digest] for v, a in zip(exact, archs, strict=True)]
    for row, a, b in zip(report["architectures"], exact, second, strict=True):
        assert row["long"] == pytest.approx((a + b) / 2)  # the reference is the seeds' mean
    ref = report["reference_agreement"]
    assert len(ref["pairs"]) == 1 and ref["pairs"][0]["seeds"] == [study.proxy.seed, study.proxy.seed + 1]
    assert ref["kendall_tau_mean"] == pytest.approx(kendalltau(exact, second).statistic) and ref["kendall_tau_mean"] < 1
    lines = describe(report)
    assert "(10x, mean of 2 seeds)" in lines[0]
    assert any(line.startswith(f"the long runs' seeds against each other: Kendall tau {ref['kendall_tau_mean']:.2f}") for line in lines)
    assert front_line(report, study).endswith(f"; the long runs' own seeds agree at tau {ref['kendall_tau_mean']:.2f}")


def test_reuse_copies_the_long_runs_of_another_budget_s_validation_and_trains_only_the_new_proxies(study_file, tmp_path, capsys):
    quarter = tmp_path / "quarter.yaml"  # the same study with a proxy of a quarter the budget: its 16x is the first one's 4x
    quarter.write_text(study_file.read_text().replace("tokens: 256", "tokens: 64"))
    full, small = Study.load(study_file), Study.load(quarter)
    archs = draw_architectures(full, 3)
    first = open_run_dir(full, tmp_path / "run-256")
    validate(full, first, archs, factor=4, progress=False, train=_fake_train([]))  # long runs of 1,024 tokens
    calls = []
    report = validate(small, open_run_dir(small, tmp_path / "run-64"), archs, factor=16, progress=False, train=_fake_train(calls), reuse=[first])
    assert sorted(calls) == sorted((a.digest, 64) for a in archs)  # the long runs came from the other directory
    assert report["long_tokens"] == 1024 and report["compared"] == 3
    assert len(RunDir(tmp_path / "run-64").validation_records()) == 6  # copied in: the directory stands on its own
    assert "reused 3 recorded training(s)" in capsys.readouterr().out
    assert main(["validate", str(quarter), "--archs", "3", "--factor", "16", "--out", str(tmp_path / "x"), "--reuse", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "--reuse:" in err and "nowhere" in err and "validation.jsonl" in err and len(err.strip().splitlines()) == 1


def test_retrain_trains_again_the_architectures_of_a_fixed_family_and_copies_the_rest(study_file, tmp_path, capsys):
    study = Study.load(study_file)
    archs = draw_architectures(study, 6)
    first = open_run_dir(study, tmp_path / "first")
    validate(study, first, archs, factor=4, progress=False, train=_fake_train([]))
    holding = {f: {a.digest for a in archs if f in a.families()} for arch in archs for f in arch.families()}
    family = next(f for f, digests in sorted(holding.items()) if len(digests) < len(archs))  # in some, not all
    holding = holding[family]
    calls = []
    validate(study, open_run_dir(study, tmp_path / "second"), archs, factor=4, progress=False, train=_fake_train(calls),
             reuse=[first], retrain=[family])
    assert {digest for digest, _ in calls} == holding and len(calls) == 2 * len(holding)  # proxy and long run each
    assert f"with {family} trained again" in capsys.readouterr().out
    for flags, message in ((["--retrain", family], "only with --reuse"), (["--reuse", str(tmp_path / "first"), "--retrain", "nonesuch"], "unknown block family 'nonesuch'")):
        assert main(["validate", str(study_file), "--archs", "3", "--out", str(tmp_path / "x"), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_lr_width_retrains_only_the_models_it_slows_and_reuses_the_narrow_ones(study_file, tmp_path):
    scaled = tmp_path / "scaled.yaml"  # lr_width 16: the 32-wide models peak at half the rate, the 16-wide ones as before
    scaled.write_text(study_file.read_text().replace("device: cpu,", "device: cpu, lr_width: 16,"))
    plain, halved = Study.load(study_file), Study.load(scaled)
    archs = draw_architectures(plain, 4)
    assert {a.d_model for a in archs} == {16, 32}
    first = open_run_dir(plain, tmp_path / "plain")
    validate(plain, first, archs, factor=4, progress=False, train=_fake_train([]))
    calls, lrs = [], {}

    def train(arch, settings, on_step):
        lrs[arch.digest] = settings.lr
        return _fake_train(calls)(arch, settings, on_step)

    validate(halved, open_run_dir(halved, tmp_path / "halved"), archs, factor=4, progress=False, train=train, reuse=[first])
    wide = {a.digest for a in archs if a.d_model == 32}
    assert sorted(calls) == sorted((d, t) for d in wide for t in (256, 1024))  # the narrow models' records reused
    assert set(lrs.values()) == {plain.proxy.lr / 2}  # and the wide ones trained at the scaled rate


def test_the_front_says_when_the_proxy_is_unvalidated_or_validated_with_other_settings(study_file):
    study = Study.load(study_file)
    assert front_line(None, study).startswith("proxy unvalidated")
    assert "other proxy settings" in front_line({"proxy_key": "elsewhere"}, study)


def _hand_made_run(path, study_file, statuses):
    """A run directory of the tiny study with one trials-table row per status (no training)."""
    study = Study.load(study_file)
    run_dir = open_run_dir(study, path)
    archs = draw_architectures(study, len(statuses))
    run_dir.write_trials([{"trial": i, "status": status, "digest": a.digest, "arch": a.to_json(), "summary": a.summary(),
                           "bits_per_byte": 1.0 + i / 10, "train_tokens_per_s": 100.0 * (i + 1)}
                          for i, (a, status) in enumerate(zip(archs, statuses, strict=True))])
    return study, archs


def test_front_prints_the_validation_line(tmp_path, study_file, capsys):
    path = tmp_path / "run"
    study, _ = _hand_made_run(path, study_file, ["ok"] * 4)
    assert main(["front", str(path)]) == 0
    assert "proxy unvalidated" in capsys.readouterr().out
    RunDir(path).write_validation({"proxy_key": study.proxy_key, "factor": 10, "metric": "bits_per_byte", "compared": 5,
                                   "agreement": {"n": 5, "k": 3, "top_k_overlap": 2, "kendall_tau": {"value": 0.8, "low": 0.4, "high": 1.0}}})
    assert main(["front", str(path)]) == 0
    assert "proxy validated: Kendall tau 0.80 [0.40, 1.00] against 10x its budget" in capsys.readouterr().out


@pytest.mark.parametrize("flags,message", [
    (["--archs", "2"], "--archs: expected at least 3"),
    (["--factor", "0.5"], "--factor: expected a number greater than 1"),
    (["--long-repeats", "9"], "--long-repeats: expected at most 8 seeds per long run"),
    (["--long-repeats", "0"], "--long-repeats: expected a positive integer"),
    (["--from-run", "nowhere"], "no such run directory"),
])
def test_bad_flags_are_one_line_and_exit_2(study_file, tmp_path, capsys, flags, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        code = main(["validate", str(study_file), *flags])
        raise SystemExit(code)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_another_study_s_run_directory_is_refused(study_file, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text(study_file.read_text().replace("tokens: 256", "tokens: 1024"))
    open_run_dir(Study.load(study_file), tmp_path / "run")  # a run directory of the first study
    assert main(["validate", str(other), "--out", str(tmp_path / "run")]) == 2
    assert "holds a different study" in capsys.readouterr().err


def test_from_run_takes_the_first_distinct_ok_trials_of_a_run_of_the_same_study(tmp_path, study_file, capsys):
    path = tmp_path / "run"
    study, archs = _hand_made_run(path, study_file, ["diverged", "ok", "ok", "ok", "ok"])
    assert [a.digest for a in run_architectures(open_run_dir(study, path, existing=True).path, 3)] == [a.digest for a in archs[1:4]]
    other = tmp_path / "other.yaml"
    other.write_text(study_file.read_text().replace("tokens: 256", "tokens: 1024"))
    assert main(["validate", str(other), "--from-run", str(path)]) == 2
    assert "holds a different study" in capsys.readouterr().err



def dies(arch) -> bool:
    return arch.d_model == 16 and len(arch.layers) == 1


def dying_train(arch, settings, on_step):
    """A module-level (picklable) trainer for the parallel runner: the power laws, but the one-layer width-16
    architectures end their process without a word, as a crashed CUDA context would."""
    if dies(arch) and settings.seed == 99:
        import os

        os._exit(3)
    return _fake_train([])(arch, settings, on_step)


def test_parallel_trainings_give_the_same_report_and_a_dead_process_is_one_error(study_file, tmp_path):
    import dataclasses

    study = Study.load(study_file)
    archs = draw_architectures(study, 4)  # two of them die with seed 99
    serial = validate(study, open_run_dir(study, tmp_path / "a"), archs, factor=10, progress=False, train=dying_train)
    parallel = validate(study, open_run_dir(study, tmp_path / "b"), archs, factor=10, progress=False, train=dying_train, jobs=3)
    assert parallel["agreement"] == serial["agreement"] and parallel["architectures"] == serial["architectures"]
    assert len(RunDir(tmp_path / "b").validation_records()) == 8
    dying = dataclasses.replace(study, proxy=dataclasses.replace(study.proxy, seed=99))
    report = validate(dying, open_run_dir(dying, tmp_path / "c"), archs, factor=10, progress=False, train=dying_train, jobs=2)
    died = sum(dies(a) for a in archs)
    assert died >= 1
    statuses = [(r["proxy_status"], r["long_status"]) for r in report["architectures"]]
    assert statuses.count(("error", "error")) == died and statuses.count(("ok", "ok")) == len(archs) - died
    assert all("process died (exit code 3)" in r["metrics"]["reason"] for r in RunDir(tmp_path / "c").validation_records() if r["metrics"]["status"] == "error")


def threads_train(arch, settings, on_step):
    """A module-level trainer that reports, as its loss, the torch threads its worker process was given."""
    import torch

    return Metrics(status="ok", val_loss=float(torch.get_num_threads()), bits_per_byte=float(torch.get_num_threads()))


def test_parallel_trainings_split_the_cores_between_their_processes(study_file):
    """Each of J worker processes gets cores // J torch threads (at least one), not torch's default of every core,
    which made two CPU trainings at once 5.7x slower than one after the other on 2 cores."""
    import os

    cores = len(os.sched_getaffinity(0))
    assert cpu_share(1) == cores and cpu_share(cores) == 1 and cpu_share(4 * cores) == 1
    archs = draw_architectures(Study.load(study_file), 2)
    settings = Study.load(study_file).proxy
    results = dict(train_parallel([(a, settings) for a in archs], 2, train=threads_train, progress=False))
    assert [results[i]["val_loss"] for i in range(2)] == [float(max(1, cores // 2))] * 2
