"""`archsearch report`: one self-contained HTML page of a run, checked in a real headless Chromium."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pandas as pd
import pytest

from archsearch import Architecture
from archsearch.cli import main
from archsearch.report import learning_curves, sections
from archsearch.study import TABLE_COLUMNS, load_run

STUDY = """\
name: tiny-report
space:
  name: tiny
  d_model: {choice: [32, 64]}
  n_layers: {choice: [2, 3]}
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


def arch(d_model: int, mixers: str) -> Architecture:
    names = {"D": "{block: deltanet, heads: 2}", "A": "{block: attn, heads: 2}"}
    layers = "\n".join(f"  - {{mixer: {names[m]}, channel: glu}}" for m in mixers)
    return Architecture.from_yaml(f"d_model: {d_model}\nlayers:\n{layers}\n")


# trial: (d_model, mixers, bits_per_byte, train_tokens_per_s)
TRIALS = {0: (32, "AD", 1.9, 900.0), 1: (64, "DA", 1.5, 500.0), 2: (32, "DAD", 1.7, 800.0), 3: (64, "ADD", 1.3, 300.0),
          4: (32, "DDA", 1.8, 950.0), 5: (64, "DA", 1.45, 520.0), 6: (32, "AD", 1.85, 910.0), 7: (64, "DDA", 1.35, 350.0)}


@pytest.fixture
def run_dir(tmp_path):
    """A finished run as `archsearch run` leaves it: study, trials table, Optuna storage, Ray's per-trial results."""
    path = tmp_path / "run"
    path.mkdir()
    (path / "study.yaml").write_text(STUDY)
    study = optuna.create_study(study_name="tiny-report", storage=f"sqlite:///{path / 'optuna.db'}",
                                directions=["minimize", "maximize"])
    rows = []
    for trial, (d, mixers, bpb, tps) in TRIALS.items():
        a = arch(d, mixers)
        params = {"d_model": str(d), "n_layers": str(len(mixers)), "at": str(mixers.index("A"))}
        dists = {"d_model": optuna.distributions.CategoricalDistribution(["32", "64"]),
                 "n_layers": optuna.distributions.CategoricalDistribution(["2", "3"]),
                 "at": optuna.distributions.CategoricalDistribution(["0", "1", "2"])}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, values=[bpb, tps]))
        row = dict.fromkeys(TABLE_COLUMNS)
        row.update(trial=trial, status="ok", reason="", summary=a.summary(), digest=a.digest, arch=a.to_json(),
                   params=a.cost().params, bits_per_byte=bpb, train_tokens_per_s=tps, seed=0,
                   **{f"p:{k}": v for k, v in params.items()})
        rows.append(row)
        folder = path / "ray" / "session-1" / f"trial_{trial:08x}"
        folder.mkdir(parents=True)
        evals = [{"tokens": t, "val_loss": bpb + 1.0 / (1 + i), "status": "running", "config": {"trial_number": trial}}
                 for i, t in enumerate((1000, 2000, 4000))]
        (folder / "result.json").write_text("".join(json.dumps(e) + "\n" for e in evals))
    pd.DataFrame(rows).to_csv(path / "trials.csv", index=False)
    return path


def test_the_report_has_every_section_with_its_data(run_dir):
    run = load_run(run_dir, require_trials=True)
    parts = {s.title: s for s in sections(run)}
    assert list(parts) == ["Pareto front", "Hypervolume against trials", "Learning curves", "Parameter importances",
                           "Parameters"]
    front = parts["Pareto front"].figure
    hover = [t for trace in front.data for t in trace.text]
    assert len(hover) == len(TRIALS)
    assert any("1: attn(heads=2, key_conv=0, kv_heads=2, rope_base=10000.0) + glu(" in t for t in hover)  # layer by layer
    volumes = parts["Hypervolume against trials"].figure.data[0].y
    assert len(volumes) == len(TRIALS) and all(b >= a for a, b in zip(volumes, volumes[1:], strict=False))
    assert volumes[-1] > volumes[0]
    assert len(parts["Learning curves"].figure.data) == len(TRIALS)
    assert list(learning_curves(run)[3]["tokens"]) == [1000, 2000, 4000]
    importances = parts["Parameter importances"].figure.data
    assert len(importances) == 2 and {"d_model", "n_layers", "at"} >= set(importances[0].y)
    assert parts["Parameters"].figure.layout.title.text == "Parallel Coordinate Plot"  # Optuna's, drawn as lines


def test_the_optuna_sections_leave_out_draws_that_were_no_trials(run_dir):
    from archsearch.report import optuna_study

    stored = optuna.load_study(study_name="tiny-report", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    first = stored.get_trials()[0]
    for status in ("known", "redrawn"):  # a re-draw of trial 0's architecture, told its values; an infeasible draw
        stored.add_trial(optuna.trial.create_trial(params=first.params, distributions=first.distributions,
                                                   values=first.values, user_attrs={"status": status}))
    study = optuna_study(load_run(run_dir, require_trials=True))
    assert len(study.get_trials()) == len(TRIALS) and [t.params for t in study.get_trials()][0] == first.params


def test_a_run_without_histories_or_validation_says_so(run_dir):
    shutil.rmtree(run_dir / "ray")
    parts = {s.title: s for s in sections(load_run(run_dir, require_trials=True))}
    assert parts["Learning curves"].figure is None
    assert "recorded no intermediate evaluations" in parts["Learning curves"].note
    assert "Proxy validation" not in parts


def test_the_validation_tau_is_shown_when_the_run_has_one(run_dir):
    report = {"metric": "bits_per_byte", "factor": 10, "agreement": {"kendall_tau": 0.733},
              "architectures": [{"summary": "AD", "proxy": 1.9, "long": 1.5}, {"summary": "DA", "proxy": 1.5, "long": 1.2}]}
    (run_dir / "validation.json").write_text(json.dumps(report))
    validation = sections(load_run(run_dir, require_trials=True))[-1]
    assert validation.title == "Proxy validation" and "Kendall tau 0.733" in validation.note
    assert list(validation.figure.data[0].x) == [1.9, 1.5]


@pytest.mark.parametrize("out, expected", [("report.txt", "expected a file name ending in .html"),
                                           (".", "is a directory")])
def test_a_bad_report_path_is_one_line(run_dir, tmp_path, capsys, out, expected):
    assert main(["report", str(run_dir), "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err


# --- in a browser ------------------------------------------------------------------------------------------------------

CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=20000"]


def browse(page, *flags: str) -> tuple[str, list[str]]:
    """Load `page` in headless Chromium: (its DOM after the scripts ran, the console messages it logged)."""
    done = subprocess.run([*CHROMIUM, "--enable-logging=stderr", "--v=0", *flags, "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def test_the_console_check_catches_a_script_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('broken on purpose')</script></body></html>")
    _, console = browse(page)
    assert any("broken on purpose" in line for line in console)


def test_the_report_renders_in_chromium_without_console_errors(run_dir, tmp_path, capsys):
    assert shutil.which("chromium"), "the browser test needs Debian's chromium (apt-get install chromium; .ci/run does)"
    page = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(page)]) == 0
    assert "opens offline" in capsys.readouterr().out
    text = page.read_text()
    assert "<script src=" not in text  # self-contained: plotly.js is inlined, nothing is fetched
    dom, console = browse(page)
    assert console == []
    figures = len(re.findall(r'<div id="[^"]+" class="plotly-graph-div"', text))
    assert figures == 5
    assert len(re.findall(r'class="[^"]*js-plotly-plot', dom)) == figures  # every plot rendered by plotly.js
    assert dom.count('class="main-svg"') >= figures
    shot = tmp_path / "report.png"
    subprocess.run([*CHROMIUM, "--window-size=1100,3000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000



# --- optuna-dashboard (the tracking extra) -----------------------------------------------------------------------------


def test_optuna_dashboard_opens_the_runs_storage_over_http(run_dir):
    bin_dir = Path(sys.executable).parent
    dashboard = shutil.which("optuna-dashboard", path=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    assert dashboard, "optuna-dashboard is not installed: pip install 'archsearch[tracking]'"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([dashboard, f"sqlite:///{run_dir / 'optuna.db'}", "--host", "127.0.0.1",
                               "--port", str(port), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}/api"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                with urllib.request.urlopen(f"{base}/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.5)
        (summary,) = studies
        assert summary["study_name"] == "tiny-report"
        with urllib.request.urlopen(f"{base}/studies/{summary['study_id']}", timeout=10) as r:
            detail = json.load(r)
        assert len(detail["trials"]) == len(TRIALS)
        assert sorted(tuple(t["values"]) for t in detail["trials"]) == sorted((v[2], v[3]) for v in TRIALS.values())
    finally:
        server.terminate()
        server.wait(timeout=30)
