"""Tracking: a study's trials logged to TensorBoard through Ray Tune's logger callbacks; refusals in one line."""

import math
import struct
import sys

import pytest

from archsearch.errors import ArchsearchError, ConfigError

pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time on a small machine


def with_tracking(path, tracking):
    text = path.read_text().replace("resources: {cpu: 1}}", f"resources: {{cpu: 1}}, tracking: {tracking}}}")
    path.write_text(text)
    return path


def scalars(folder):
    """Every scalar in the TensorBoard event files under `folder`, by tag: [(step, value)]. The files are TFRecords
    (length, its CRC, an Event protocol buffer, its CRC), read here with tensorboardX's own Event message."""
    from tensorboardX.proto.event_pb2 import Event

    out = {}
    for file in sorted(folder.glob("events.out.tfevents.*")):
        data = file.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack_from("<Q", data, at)
            event = Event.FromString(data[at + 12: at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_a_study_logs_each_trials_results_to_tensorboard_in_the_run_directory(write_study, tmp_path):
    import ray

    from archsearch.study import RunDir, run

    try:
        run_dir = RunDir(run(str(with_tracking(write_study(trials=2, concurrency=2), "[tensorboard]")), out=str(tmp_path / "run")))
    finally:
        ray.shutdown()
    table = run_dir.read_trials()
    assert sorted(p.name for p in run_dir.tensorboard.iterdir()) == [f"trial_{n}" for n in sorted(table["trial"])]
    for _, row in table.iterrows():
        logged = scalars(run_dir.tensorboard_trial(row["trial"]))
        assert logged, f"trial {row['trial']} logged no scalar"
        (last_step, bpb), = logged["ray/tune/bits_per_byte"][-1:]
        assert math.isclose(bpb, row["bits_per_byte"], rel_tol=1e-6)  # the final report, as the table has it
        assert len(logged["ray/tune/val_loss"]) >= 2  # the intermediate evaluations too: a learning curve
        assert last_step == max(step for step, _ in logged["ray/tune/val_loss"])


def test_a_tracker_that_is_not_installed_is_refused_in_one_line_before_the_run_directory(write_study, tmp_path, monkeypatch):
    from archsearch.study import run

    monkeypatch.setitem(sys.modules, "wandb", None)  # what find_spec sees of a package that cannot be imported
    path = with_tracking(write_study(), "[tensorboard, wandb]")
    with pytest.raises(ArchsearchError) as info:
        run(str(path), out=str(tmp_path / "run"))
    assert str(info.value) == f"{path}: search.tracking: wandb needs the wandb package, which is not installed: pip install 'archsearch[tracking]'"
    assert not (tmp_path / "run").exists()


def test_an_unknown_tracker_is_one_line_at_its_place(write_study):
    from archsearch.study import Study

    path = with_tracking(write_study(), "[tensorboard, mlflow]")
    with pytest.raises(ConfigError) as info:
        Study.load(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:5: search.tracking") and "tensorboard" in message and "wandb" in message, message
    assert "\n" not in message


def test_every_tracker_the_study_file_names_has_a_logger():
    from archsearch.study._config import TRACKING_PACKAGES
    from archsearch.study._optuna_ray import TRACKERS

    assert set(TRACKERS) == set(TRACKING_PACKAGES)
