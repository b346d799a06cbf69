"""The run directory: what `freeze` writes reloads equal, and what is not a run directory is refused in one line."""

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


def test_the_cache_returns_a_result_only_for_the_same_architecture_and_proxy_settings(tmp_path):
    from archsearch.study import RunDir

    run_dir = RunDir(tmp_path)
    assert run_dir.cached_result("abc", "p1") is None
    run_dir.cache_result("abc", "p1", {"val_loss": 1.5})
    assert run_dir.cached_result("abc", "p1") == {"val_loss": 1.5}
    assert run_dir.cached_result("abc", "p2") is None and run_dir.cached_result("xyz", "p1") is None


def test_the_trials_table_records_a_cut_off_trial_as_pruned_with_its_parameters(tmp_path):
    from archsearch.study import TABLE_COLUMNS, RunDir
    from archsearch.study._rundir import TrialsTable

    run_dir = RunDir(tmp_path)
    table = TrialsTable(run_dir)
    config = {"trial_number": 3, "arch": None, "digest": "", "reason": "", "d_model": 64}
    row = table.add(config, {"status": "running", "tokens": 512, "val_loss": 2.0})
    assert row["status"] == "pruned" and row["tokens_trained"] == 512
    again = run_dir.read_trials()
    assert list(again.columns) == [*TABLE_COLUMNS, "p:d_model"] and again.loc[0, "p:d_model"] == 64
    assert TrialsTable(run_dir).rows[3]["val_loss"] == 2.0  # a resumed driver starts from the table on disk


def test_a_cut_off_cache_line_is_skipped_not_fatal(tmp_path):
    from archsearch.study import RunDir

    run_dir = RunDir(tmp_path)
    run_dir.cache_result("abc", "p1", {"val_loss": 1.5})
    with open(run_dir.cache_file, "a") as f:
        f.write('{"digest": "xyz", "proxy": "p1", "resu')  # a trial killed mid-write
    assert run_dir.cached_result("abc", "p1") == {"val_loss": 1.5}
    assert run_dir.cached_result("xyz", "p1") is None
