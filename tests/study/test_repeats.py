"""search.repeats: a trial trains its architecture with several seeds; its row holds the means and each
objective's spread, the front prints mean ± std and the plots draw error bars (no Ray: the trial runs in this
process, on a fake proxy whose figures depend on the seed)."""

import statistics

import matplotlib.axes
import pandas as pd
import pytest

from archsearch.cli.front import describe
from archsearch.errors import ConfigError
from archsearch.front import compute_front, plot_front
from archsearch.proxy import Metrics
from archsearch.study import TABLE_COLUMNS, Study, _trial, load_run
from archsearch.study._rundir import RunDir, TrialsTable, trial_row
from archsearch.study._trial import run_trial

BPB = {0: 2.0, 1: 2.3, 2: 2.9, 3: 2.6}  # bits per byte by seed
TPS = {0: 1000.0, 1: 1400.0, 2: 900.0, 3: 1100.0}


def fake_proxy(diverged=(), timing_missing=()):
    """run_proxy's stand-in: figures by seed; the seeds in `diverged` diverge, those in `timing_missing` have no
    throughput (as on an overloaded machine). Records the seeds and what each got."""
    calls = []

    def run_proxy(arch, settings, report=None, save_weights=None):
        seed = settings.seed
        calls.append({"seed": seed, "report": report is not None, "weights": save_weights})
        if report is not None:
            report({"tokens": 512, "val_loss": BPB[seed] * 0.7})
        if seed in diverged:
            return Metrics(status="diverged", reason=f"loss is nan at step {seed}", tokens_trained=256, wall_seconds=1.0)
        tps = None if seed in timing_missing else TPS[seed]
        return Metrics(bits_per_byte=BPB[seed], val_loss=BPB[seed] * 0.7, train_tokens_per_s=tps, tokens_trained=2048,
                       wall_seconds=10.0 + seed, timing_note="overloaded" if tps is None else "")

    run_proxy.calls = calls
    return run_proxy


def study_with(write_study, search_extra):
    path = write_study()
    path.write_text(path.read_text().replace("resources: {cpu: 1}}", "resources: {cpu: 1}" + search_extra + "}"))
    return Study.load(path)


def trial(study, tmp_path, monkeypatch, proxy, seed=0, number=0):
    """Run one trial of the study's first architecture on `proxy`; returns its row and its reports."""
    from archsearch import sample

    monkeypatch.setattr(_trial, "run_proxy", proxy)
    arch = sample(study.space, 0)
    config = {"trial_number": number, "arch": arch.to_json(), "digest": arch.digest, "reason": "", "seed": seed, "baseline": ""}
    reports = []
    run_trial(config, study, RunDir(tmp_path), reports.append)
    return trial_row(config, reports[-1]), reports


def test_a_trial_with_repeats_records_the_means_and_each_objectives_spread(write_study, tmp_path, monkeypatch):
    study = study_with(write_study, ", repeats: 3")
    proxy = fake_proxy()
    row, reports = trial(study, tmp_path, monkeypatch, proxy)
    assert [c["seed"] for c in proxy.calls] == [0, 1, 2]
    assert [c["report"] for c in proxy.calls] == [True, False, False]  # early stopping follows the first seed
    assert row["status"] == "ok" and row["seed"] == 0 and row["reason"] == ""
    assert row["bits_per_byte"] == pytest.approx(statistics.mean([2.0, 2.3, 2.9]))
    assert row["bits_per_byte_std"] == pytest.approx(statistics.stdev([2.0, 2.3, 2.9]))
    assert row["train_tokens_per_s"] == pytest.approx(1100.0)
    assert row["train_tokens_per_s_std"] == pytest.approx(statistics.stdev([1000.0, 1400.0, 900.0]))
    assert row["bits_per_byte_n"] == row["train_tokens_per_s_n"] == 3
    assert row["wall_seconds"] == pytest.approx(10 + 11 + 12)  # the trial's cost: every seed's run
    assert row["tokens_trained"] == 2048 and isinstance(row["tokens_trained"], int) and row["params"] > 0
    assert len(reports) == 2 and reports[0]["val_loss"] == pytest.approx(1.4)  # one intermediate, then the result
    # the table puts the spread columns right after the fixed ones, and pandas reads them back as numbers
    TrialsTable(RunDir(tmp_path), [row]).add(row)
    frame = RunDir(tmp_path).read_trials()
    assert list(frame.columns[:len(TABLE_COLUMNS) + 4]) == [*TABLE_COLUMNS, "bits_per_byte_std", "bits_per_byte_n",
                                                             "train_tokens_per_s_std", "train_tokens_per_s_n"]
    assert frame.loc[0, "bits_per_byte_std"] == pytest.approx(row["bits_per_byte_std"])


def test_diverged_seeds_are_left_out_of_the_mean_and_named(write_study, tmp_path, monkeypatch):
    study = study_with(write_study, ", repeats: 4")
    row, _ = trial(study, tmp_path, monkeypatch, fake_proxy(diverged={1}, timing_missing={3}))
    assert row["status"] == "ok"
    assert row["bits_per_byte"] == pytest.approx(statistics.mean([2.0, 2.9, 2.6])) and row["bits_per_byte_n"] == 3
    assert row["train_tokens_per_s"] == pytest.approx(statistics.mean([1000.0, 900.0])) and row["train_tokens_per_s_n"] == 2
    assert row["reason"] == "seed 1 diverged: loss is nan at step 1"
    assert row["timing_note"] == ""  # text comes from the first ok seed


def test_a_trial_whose_seeds_all_fail_has_that_failure(write_study, tmp_path, monkeypatch):
    study = study_with(write_study, ", repeats: 2")
    row, _ = trial(study, tmp_path, monkeypatch, fake_proxy(diverged={0, 1}))
    assert row["status"] == "diverged" and row["bits_per_byte"] is None
    assert row["reason"] == "seed 0 diverged: loss is nan at step 0; seed 1 diverged: loss is nan at step 1"


def test_one_repeat_is_the_plain_run_and_a_remeasure_seed_shifts_every_repeat(write_study, tmp_path, monkeypatch):
    plain = study_with(write_study, "")
    proxy = fake_proxy()
    row, _ = trial(plain, tmp_path, monkeypatch, proxy)
    assert [c["seed"] for c in proxy.calls] == [0] and row["bits_per_byte"] == 2.0
    assert not any(c.endswith("_std") for c in row)  # no spread columns without repeats
    proxy = fake_proxy()
    row, _ = trial(study_with(write_study, ", repeats: 2, remeasure: true"), tmp_path, monkeypatch, proxy, seed=2)
    assert [c["seed"] for c in proxy.calls] == [2, 3] and row["seed"] == 2
    assert row["bits_per_byte"] == pytest.approx((2.9 + 2.6) / 2)


def test_the_driver_gives_a_remeasured_architecture_new_seeds(write_study):
    import optuna

    from archsearch.study._optuna_ray import DefineByRun

    study = study_with(write_study, ", repeats: 2, remeasure: true")
    digest = "abc"
    define = DefineByRun(study, [{"trial": 0, "status": "ok", "digest": digest, "seed": 0, "bits_per_byte": 2.0,
                                  "train_tokens_per_s": 1.0}])
    assert define.seed(5, digest) == 2 and define.seed(5, digest) == 2  # asked twice for one trial: the same seeds
    assert define.seed(6, digest) == 4 and define.seed(7, "other") == 0
    assert define.known[digest] == (optuna.trial.TrialState.COMPLETE, [2.0, 1.0])
    assert DefineByRun(study_with(write_study, ", repeats: 2"), []).seed(6, digest) == 0  # no remeasure: the study's seed


@pytest.fixture
def repeated_run(tmp_path):
    """A run by hand whose trials were measured over seeds: two on the front with spreads, one dominated."""
    from tests.test_front import make_run

    path = make_run(tmp_path / "run", {0: (1.0, 100.0), 1: (1.2, 300.0), 2: (1.5, 90.0)})
    frame = pd.read_csv(path / "trials.csv")
    frame["bits_per_byte_std"] = [0.05, 0.1, 0.2]
    frame["bits_per_byte_n"] = 3
    frame["train_tokens_per_s_std"] = [10.0, 25.0, 5.0]
    frame["train_tokens_per_s_n"] = 3
    frame.to_csv(path / "trials.csv", index=False)
    return path


def test_the_front_prints_mean_and_standard_deviation(repeated_run):
    front = compute_front(load_run(repeated_run, require_trials=True))
    assert list(front.table().columns) == ["trial", "summary", "bits_per_byte", "train_tokens_per_s",
                                           "bits_per_byte_std", "train_tokens_per_s_std"]
    lines = "\n".join(describe(front))
    assert "1 ± 0.05" in lines and "1.2 ± 0.1" in lines and "100 ± 10" in lines and "300 ± 25" in lines


def test_the_plots_draw_error_bars(repeated_run, tmp_path, monkeypatch):
    front = compute_front(load_run(repeated_run, require_trials=True))
    drawn, original = [], matplotlib.axes.Axes.errorbar

    def errorbar(self, x, y, *args, **kwargs):
        drawn.append((list(x), list(kwargs["xerr"]), list(kwargs["yerr"])))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", errorbar)
    assert plot_front(front, tmp_path / "f.png").stat().st_size > 10_000
    assert drawn == [([1.0, 1.2, 1.5], [0.05, 0.1, 0.2], [10.0, 25.0, 5.0])]
    html = plot_front(front, tmp_path / "f.html").read_text().replace(" ", "")
    assert '"error_x":{"array":[0.05,0.1,0.2]' in html and '"error_y":{"array":[10.0,25.0,5.0]' in html


@pytest.mark.parametrize(("setting", "fragment"), [
    ("repeats: 0", "expected a number of seeds from 1 to 16, got 0"),
    ("repeats: 17", "expected a number of seeds from 1 to 16, got 17"),
    ("repeats: two", "expected a number of seeds from 1 to 16, got 'two'"),
    ("remeasure: sometimes", "remeasure"),
])
def test_bad_repeats_are_one_line(write_study, setting, fragment):
    path = write_study()
    path.write_text(path.read_text().replace("resources: {cpu: 1}}", "resources: {cpu: 1}, " + setting + "}"))
    with pytest.raises(ConfigError) as info:
        Study.load(path)
    assert info.value.key == "search." + setting.split(":")[0] and info.value.line == 5
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_repeats_with_a_fidelity_ladder_are_refused_in_one_line(write_study, monkeypatch):
    path = write_study(tokens=4000, extra="fidelity: {rungs: [1K, 4K]}\n")
    text = path.read_text().replace("{train_tokens_per_s: max}", "{params: min}")  # what every rung measures
    path.write_text(text.replace("resources: {cpu: 1}}", "resources: {cpu: 1}, repeats: 3}"))
    with pytest.raises(ConfigError) as info:
        Study.load(path)
    assert info.value.key == "search.repeats" and info.value.line == 5 and "fidelity ladder" in info.value.message
    path.write_text(path.read_text().replace("repeats: 3", "repeats: 1"))
    assert Study.load(path).search.repeats == 1
