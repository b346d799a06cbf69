"""`archsearch front`: Pareto mask, exact hypervolume, knee, tables, plots and comparison on hand-made runs."""

import json
import textwrap

import numpy as np
import pandas as pd
import pytest

import archsearch
from archsearch.cli import main
from archsearch.front import FrontError, compute_front, front_table, objectives, plot_front
from archsearch.pareto import hypervolume
from archsearch.study import TABLE_COLUMNS, Objective, Study, load_run

STUDY = """\
name: tiny
space:
  name: tiny
  d_model: {choice: [32, 64]}
  n_layers: {choice: [2, 3, 4]}
  layers:
    mixer: deltanet
    channel: glu
    place:
      - {mixer: attn, at: {positions: 1}}
  blocks:
    deltanet: {heads: 2}
    attn: {heads: 2}
objectives: [{bits_per_byte: min}, {train_tokens_per_s: max}]
"""

# trial: (bits_per_byte, train_tokens_per_s); front: 0, 1, 2, 4 (4 ties 1); 3, 5, 6 are dominated
TABLE = {0: (1.0, 100.0), 1: (1.2, 300.0), 2: (1.5, 500.0), 3: (1.3, 250.0), 4: (1.2, 300.0), 5: (1.0, 90.0), 6: (2.0, 500.0)}


def make_run(path, metrics, statuses=None, study=STUDY):
    """A run directory by hand: the tiny study, and one row per trial with an architecture of the tiny space."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "study.yaml").write_text(textwrap.dedent(study))
    space = Study.load(path / "study.yaml").space
    rows = []
    for trial, values in metrics.items():
        arch = archsearch.sample(space, trial)
        cost = arch.cost()
        status = (statuses or {}).get(trial, "ok")
        row = dict.fromkeys(TABLE_COLUMNS)
        row.update(trial=trial, status=status, reason="" if status == "ok" else "made up", summary=arch.summary(),
                   digest=arch.digest, arch=json.dumps(arch.to_dict()), params=cost.params,
                   active_params=cost.active_params, flops_per_token=cost.flops_per_token, state_bytes=cost.state_bytes,
                   tokens_trained=1000, wall_seconds=1.0, seed=0)
        if status == "ok":
            row.update(bits_per_byte=values[0], train_tokens_per_s=values[1], val_loss=values[0] * 0.69)
        row["p:d_model"] = arch.d_model
        rows.append(row)
    pd.DataFrame(rows).to_csv(path / "trials.csv", index=False)
    return path


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "run", {**TABLE, 7: None}, {7: "diverged"})


# --- a run -------------------------------------------------------------------------------------------------------------


def test_front_of_a_run_uses_the_study_objectives_and_only_ok_trials(run_dir):
    run = load_run(run_dir, require_trials=True)
    f = compute_front(run)
    assert [o.metric for o in f.objectives] == ["bits_per_byte", "train_tokens_per_s"]
    assert sorted(f.candidates["trial"]) == list(range(7))
    table = front_table(run)
    assert list(table.columns) == ["trial", "summary", "bits_per_byte", "train_tokens_per_s"]
    assert table["trial"].tolist() == [0, 1, 4, 2]  # best bits per byte first, ties by trial
    reference = [2.0 + 0.1, 90.0 - 0.1 * 410.0]
    assert f.reference == pytest.approx(reference)
    volume = hypervolume(np.array([TABLE[t] for t in (0, 1, 2)]), reference, ["minimize", "maximize"])
    assert f.hypervolume == pytest.approx(volume)
    assert f.knee == 1  # (1.2, 300) scales to (0.4, 0.5), closer to utopia than (0, 1) and (1, 0)


def test_objectives_may_be_chosen_with_natural_directions(run_dir):
    run = load_run(run_dir, require_trials=True)
    chosen = objectives(run, "val_loss,params")
    assert chosen == (Objective("val_loss", "minimize"), Objective("params", "minimize"))
    assert objectives(run, "train_tokens_per_s")[0].direction == "maximize"
    assert objectives(run, "params:max")[0].direction == "maximize"
    f = compute_front(run, chosen, reference=[10.0, 1e9])
    assert f.reference == (10.0, 1e9)
    with pytest.raises(FrontError, match="unknown metric 'speed'"):
        objectives(run, "bits_per_byte,speed")


def test_plots_are_written_in_both_formats(run_dir, tmp_path):
    f = compute_front(load_run(run_dir, require_trials=True))
    png = plot_front(f, tmp_path / "front.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    html = plot_front(f, tmp_path / "front.html")
    text = html.read_text()
    assert "plotly" in text and "(lower is better)" in text and "(higher is better)" in text
    assert f.row(1)["summary"] in text and "(knee)" in text
    with pytest.raises(FrontError, match="--plot"):
        plot_front(f, tmp_path / "front.svg")


def test_three_objectives_plot_one_panel_per_pair(run_dir, tmp_path):
    run = load_run(run_dir, require_trials=True)
    f = compute_front(run, objectives(run, "bits_per_byte,train_tokens_per_s,params"))
    assert f.mask.sum() >= 3  # the 2-D front, less one of the tied pair (params break the tie)
    assert plot_front(f, tmp_path / "three.png").stat().st_size > 10_000
    assert plot_front(f, tmp_path / "three.html").stat().st_size > 10_000


# --- the command -------------------------------------------------------------------------------------------------------


def test_front_command_prints_table_hypervolume_reference_and_knee(run_dir, tmp_path, capsys):
    assert main(["front", str(run_dir), "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "8 trials, 7 ok (1 diverged)" in out
    assert "Pareto front: 4 of 7 trials" in out
    assert "hypervolume: " in out and "reference point (bits_per_byte=2.1, train_tokens_per_s=49;" in out
    assert "knee: trial 1 " in out
    assert (tmp_path / "p.png").stat().st_size > 0


def test_front_command_takes_objectives_and_a_reference(run_dir, capsys):
    assert main(["front", str(run_dir), "--objectives", "bits_per_byte,train_tokens_per_s", "--reference", "3,0"]) == 0
    out = capsys.readouterr().out
    volume = hypervolume(np.array([TABLE[t] for t in (0, 1, 2)]), [3.0, 0.0], ["minimize", "maximize"])
    assert f"hypervolume: {volume:.6g} at reference point (bits_per_byte=3, train_tokens_per_s=0; given" in out


def test_compare_overlays_two_runs_at_a_shared_reference(run_dir, tmp_path, capsys):
    better = make_run(tmp_path / "better", {t: (b - 0.1, s * 1.5) for t, (b, s) in TABLE.items()})
    assert main(["front", str(run_dir), "--compare", str(better), "--plot", str(tmp_path / "both.html")]) == 0
    out = capsys.readouterr().out
    assert "hypervolume at the shared reference point" in out
    lines = out.split("hypervolume at the shared reference point")[1].splitlines()
    volumes = {line.split(": ")[0].strip(): float(line.split(": ")[1]) for line in lines[1:3]}
    assert volumes[str(better)] > volumes[str(run_dir)]
    html = (tmp_path / "both.html").read_text()
    assert "run: front" in html and "better: front" in html  # legends name the runs (plotly escapes the slashes)


@pytest.mark.parametrize("args, expected", [
    (["front", "{tmp}/nowhere"], "no such run directory"),
    (["front", "{tmp}/empty"], "trials.csv: missing"),
    (["front", "{run}", "--objectives", "speed"], "--objectives: unknown metric 'speed'"),
    (["front", "{failed}"], "no ok trial"),
    (["front", "{run}", "--plot", "{tmp}/x.pdf"], "--plot: "),
    (["front", "{run}", "--reference", "1,2,3"], "--reference: expected 2 numbers"),
    (["front", "{run}", "--reference", "a,b"], "--reference: 'a,b': expected numbers"),
    (["front", "{run}", "--objectives", "accuracy"], "no ok trial has a value for accuracy"),
])
def test_bad_input_is_one_line_and_exit_code_2(run_dir, tmp_path, capsys, args, expected):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "study.yaml").write_text(STUDY)
    failed = make_run(tmp_path / "failed", {0: None, 1: None}, {0: "diverged", 1: "oom"})
    args = [a.format(tmp=tmp_path, run=run_dir, failed=failed) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err
