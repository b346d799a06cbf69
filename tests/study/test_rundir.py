"""The run directory: what `freeze` writes reloads equal, and what is not a run directory is refused in one line."""

import sys

import pytest

from archsearch.errors import ArchsearchError
from archsearch.study import Study, freeze, load_run


def test_the_frozen_study_reloads_equal_from_a_run_directory(write_study, tmp_path):
    study = Study.load(write_study())
    freeze(study, tmp_path / "run")
    again = load_run(tmp_path / "run").study
    assert again.frozen == study.frozen and again.proxy == study.proxy and again.proxy_key == study.proxy_key


def test_load_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(ArchsearchError, match="not a run directory"):
        load_run(tmp_path)


def test_the_trials_table_records_a_cut_off_trial_as_pruned_with_its_parameters(tmp_path):
    from archsearch.study import TABLE_COLUMNS, RunDir
    from archsearch.study._rundir import TrialsTable, trial_row

    run_dir = RunDir(tmp_path)
    config = {"trial_number": 3, "arch": None, "digest": "", "reason": "", "seed": 0, "d_model": 64}
    row = trial_row(config, {"status": "running", "tokens": 512, "val_loss": 2.0})
    assert row["status"] == "pruned" and row["tokens_trained"] == 512
    TrialsTable(run_dir, []).add(row)
    again = run_dir.read_trials()
    assert list(again.columns) == [*TABLE_COLUMNS, "p:d_model"] and again.loc[0, "p:d_model"] == 64
    assert again.loc[0, "val_loss"] == 2.0


def test_a_garbage_trials_table_or_storage_is_one_line(tmp_path, write_study):
    from archsearch.study import RunDir, RunDirError

    freeze(Study.load(write_study()), tmp_path / "run")
    run_dir = RunDir(tmp_path / "run")
    run_dir.trials_file.write_bytes(b"\x00\xff garbage\n\"unclosed")
    with pytest.raises(RunDirError, match="trials.csv: not a readable trials table"):
        load_run(run_dir.path)
    (run_dir.path / "optuna.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(RunDirError, match="optuna.db: not a readable Optuna storage"):
        load_run(run_dir.path)


def test_reading_a_run_imports_its_plugins_only_when_trusted(write_study, tmp_path):
    marker = tmp_path / "imported"
    plugin = tmp_path / "marks.py"
    plugin.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    study = Study.load(write_study(extra=f"plugins: [{plugin}]\n"))
    marker.unlink()  # loading the study here (trusted: it is ours) ran it once
    freeze(study, tmp_path / "run")
    assert load_run(tmp_path / "run").study.plugins == (str(plugin),) and not marker.exists()
    for name in [m for m in sys.modules if m.startswith("archsearch_plugin_")]:
        del sys.modules[name]  # as in a fresh process
    load_run(tmp_path / "run", trust_plugins=True)
    assert marker.exists()


def test_a_run_whose_space_needs_an_untrusted_plugin_says_how_to_trust_it(write_study, tmp_path):
    import os

    from archsearch.study import RunDirError

    crash = os.path.join(os.path.dirname(__file__), "crash_block.py")
    space = "d_model: 32\nn_layers: 1\nlayers: {mixer: crash, channel: glu}\n"
    freeze(Study.load(write_study(space=space, extra=f"plugins: [{crash}]\n")), tmp_path / "run")
    from archsearch.blocks import REGISTRY

    family = REGISTRY.pop("crash")  # as in a fresh process that never imported the plugin
    try:
        with pytest.raises(RunDirError, match="pass --trust-plugins"):
            load_run(tmp_path / "run")
    finally:
        REGISTRY["crash"] = family
