"""The GPU busy share, from a fake NVML: which GPUs are sampled, the mean, idle on errors, the record kept."""

import time
from types import SimpleNamespace

import pytest

from archsearch.study import _runner
from archsearch.study._busy import GpuBusy, mps_hint, visible_handles
from archsearch.study._config import Objective
from archsearch.study._progress import Progress
from archsearch.study._rundir import RunDir


class FakeNvml:
    """Four GPUs; each reading pops the next utilisation of its GPU (None: NVML fails that reading)."""

    class NVMLError(Exception):
        pass

    def __init__(self, readings: dict[int, list[int | None]]) -> None:
        self.readings = readings
        self.uuids = {f"GPU-{i}aa": i for i in range(4)}

    def nvmlDeviceGetCount(self):
        return 4

    def nvmlDeviceGetHandleByIndex(self, i):
        if not 0 <= i < 4:
            raise self.NVMLError("invalid index")
        return i

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.uuids:
            raise self.NVMLError("not found")
        return self.uuids[uuid]

    def nvmlDeviceGetUtilizationRates(self, handle):
        values = self.readings.get(handle) or [0]
        value = values.pop(0) if len(values) > 1 else values[0]
        if value is None:
            raise self.NVMLError("GPU is lost")
        return SimpleNamespace(gpu=value, memory=0)


def test_visible_devices_by_index_and_uuid_in_cuda_order():
    nvml = FakeNvml({})
    assert visible_handles(nvml, None) == {"cuda0": 0, "cuda1": 1, "cuda2": 2, "cuda3": 3}
    assert visible_handles(nvml, "2,GPU-0aa") == {"cuda0": 2, "cuda1": 0}
    # CUDA stops at the first entry it cannot use: so does the sampler
    assert visible_handles(nvml, "3,7,1") == {"cuda0": 3}
    assert visible_handles(nvml, "") == {}


def test_share_is_the_mean_of_the_samples_and_a_failed_reading_is_idle():
    nvml = FakeNvml({1: [100, 50, 0, 90], 3: [20, None, 40, 100]})
    busy = GpuBusy(nvml, "1,3")
    assert busy.share() == {} and busy.line() == ""
    for _ in range(4):
        busy.sample()
    share = busy.share()
    assert share["cuda0"] == pytest.approx(0.6) and share["cuda1"] == pytest.approx(0.4)
    assert busy.line() == "GPU busy 50% (cuda0 60%, cuda1 40%)"
    one = GpuBusy(FakeNvml({0: [80, 90]}), "0")
    one.sample(), one.sample()
    assert one.line() == "GPU busy 85%"


def test_a_pickled_sampler_is_a_snapshot(monkeypatch):
    """Ray Tune pickles the callbacks, and the progress line holds the sampler: NVML's handles are ctypes pointers."""
    import ctypes

    from ray import cloudpickle  # what Ray Tune pickles the callbacks with

    nvml = FakeNvml({0: [60]})
    monkeypatch.setattr(nvml, "nvmlDeviceGetHandleByIndex", lambda i: ctypes.pointer(ctypes.c_int(i)))
    monkeypatch.setattr(nvml, "nvmlDeviceGetUtilizationRates", lambda h: SimpleNamespace(gpu=60))
    busy = GpuBusy(nvml, "0", interval=0.005).start()
    time.sleep(0.05)
    progress = Progress([Objective("bits_per_byte", "minimize")], 4, busy=busy.line)
    copy = cloudpickle.loads(cloudpickle.dumps(progress))
    busy.stop()
    assert copy.busy() == "GPU busy 60%" and not copy.busy.__self__.measuring


def test_without_nvml_nothing_is_measured():
    busy = GpuBusy(None).start()
    busy.stop()
    assert not busy.measuring and busy.line() == "" and busy.record()["mean_busy_share"] is None


def test_the_thread_samples_until_stopped():
    busy = GpuBusy(FakeNvml({0: [70]}), "0", interval=0.005).start()
    time.sleep(0.2)
    busy.stop()
    n = busy.samples
    assert n >= 5 and busy.share() == {"cuda0": pytest.approx(0.7)} and busy.seconds >= 0.2
    time.sleep(0.05)
    assert busy.samples == n  # stopped means stopped


def test_a_study_on_gpus_prints_and_keeps_its_busy_share(tmp_path, monkeypatch, capsys):
    nvml = FakeNvml({0: [90, 80]})
    monkeypatch.setattr(GpuBusy, "of_this_node", classmethod(lambda cls: cls(nvml, "0", interval=0.005)))
    study = SimpleNamespace(search=SimpleNamespace(gpu=0.25))
    run_dir = RunDir(tmp_path / "run")
    lines = []
    with _runner._busy_sampler(study, run_dir) as busy:
        time.sleep(0.1)
        progress = Progress([Objective("bits_per_byte", "minimize")], 4, busy=busy.line)
        progress.show([], 1, None)
        lines.append(capsys.readouterr().out)
    assert "GPU busy 8" in lines[0]  # the progress line carries it
    out = capsys.readouterr().out
    assert "GPU busy 8" in out and "s wall time" in out
    with _runner._busy_sampler(study, run_dir):  # a resumed session adds its own record
        time.sleep(0.02)
    records = run_dir.busy_records()
    assert len(records) == 2 and records[0]["samples"] >= 2 and 0.8 <= records[0]["mean_busy_share"] <= 0.9
    assert set(records[0]["busy_share"]) == {"cuda0"}


def test_a_study_on_gpus_without_nvml_says_so_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(GpuBusy, "of_this_node", classmethod(lambda cls: cls(None)))
    run_dir = RunDir(tmp_path / "run")
    with _runner._busy_sampler(SimpleNamespace(search=SimpleNamespace(gpu=1)), run_dir):
        pass
    assert capsys.readouterr().out.count("not measured") == 1 and not run_dir.busy_file.exists()
    with _runner._busy_sampler(SimpleNamespace(search=SimpleNamespace(gpu=0)), run_dir):  # a CPU study: silent
        pass
    assert capsys.readouterr().out == ""


def test_a_study_sharing_gpus_without_mps_is_told_how_to_let_its_trials_run_at_once(tmp_path, monkeypatch, capsys):
    pipe = tmp_path / "mps"
    environ = {"CUDA_MPS_PIPE_DIRECTORY": str(pipe)}
    assert "4 trials share each GPU and MPS is not running" in mps_hint(0.25, environ)
    assert mps_hint(1, environ) is None and mps_hint(0, environ) is None  # a whole GPU per trial, or a CPU study
    pipe.mkdir()
    (pipe / "control").touch()  # the daemon's control socket: MPS runs
    assert mps_hint(0.25, environ) is None
    # the study prints the hint once, where the driver sees the GPUs it shares (no MPS at the default pipe here)
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path / "none"))
    monkeypatch.setattr(GpuBusy, "of_this_node", classmethod(lambda cls: cls(FakeNvml({0: [50]}), "0", interval=0.005)))
    with _runner._busy_sampler(SimpleNamespace(search=SimpleNamespace(gpu=0.5)), RunDir(tmp_path / "run")):
        pass
    assert capsys.readouterr().out.count("2 trials share each GPU and MPS is not running") == 1
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipe))
    with _runner._busy_sampler(SimpleNamespace(search=SimpleNamespace(gpu=0.5)), RunDir(tmp_path / "run")):
        pass
    assert "MPS" not in capsys.readouterr().out
