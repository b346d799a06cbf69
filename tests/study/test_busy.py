"""The GPU busy share, from a fake NVML: which GPUs are sampled, the mean, idle on errors, the record kept."""

import time
from types import SimpleNamespace

import pytest

from archsearch.study import _busy, _runner
from archsearch.study._busy import GpuBusy, idle_attribution, idle_line, mps_hint, visible_handles
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
    study = SimpleNamespace(search=SimpleNamespace(gpu=0.25, concurrency=4))
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
    assert records[0]["bucket_seconds"] == 1 and 0.8 <= records[0]["series"][0] <= 0.9  # one second, two readings or more
    assert set(records[0]["idle"]) == {name for name, _ in _busy.ACTIVITIES}  # no trial ran: all before the first
    assert records[0]["idle"]["training"] == 0


def test_a_study_on_gpus_without_nvml_says_so_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(GpuBusy, "of_this_node", classmethod(lambda cls: cls(None)))
    run_dir = RunDir(tmp_path / "run")
    with _runner._busy_sampler(SimpleNamespace(search=SimpleNamespace(gpu=1, concurrency=2)), run_dir):
        pass
    assert capsys.readouterr().out.count("not measured") == 1 and not run_dir.busy_file.exists()
    with _runner._busy_sampler(SimpleNamespace(search=SimpleNamespace(gpu=0, concurrency=2)), run_dir):  # a CPU study: silent
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
    with _runner._busy_sampler(SimpleNamespace(search=SimpleNamespace(gpu=0.5, concurrency=2)), RunDir(tmp_path / "run")):
        pass
    assert capsys.readouterr().out.count("2 trials share each GPU and MPS is not running") == 1
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipe))
    with _runner._busy_sampler(SimpleNamespace(search=SimpleNamespace(gpu=0.5, concurrency=2)), RunDir(tmp_path / "run")):
        pass
    assert "MPS" not in capsys.readouterr().out


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_series_keeps_each_second_and_halves_its_resolution_past_its_bound(monkeypatch):
    clock = FakeClock()
    busy = GpuBusy(FakeNvml({0: [100, 0, 50, 50, 20]}), "0", clock=clock, wall_clock=lambda: 1000.0).start()
    for t in (0.1, 0.6, 1.2, 1.7, 3.5):  # second 2 has no reading
        clock.t = t
        busy.sample()
    record = busy.record()
    assert record["started_at"] == 1000.0 and record["bucket_seconds"] == 1
    assert record["series"] == [0.5, 0.5, None, 0.2]
    monkeypatch.setattr(_busy, "MAX_BUCKETS", 4)
    clock.t = 5.5  # bucket 5 would pass the bound of 4: pairs merge into buckets of 2 s
    busy.sample()
    record = busy.record()
    assert record["bucket_seconds"] == 2 and record["series"] == [0.5, 0.2, 0.2]


def test_idle_seconds_go_to_what_the_trials_were_doing():
    """A session of 12 buckets of 1 s, concurrency 2, on hand-made timelines:
    0-2 before the first trial; trial A 2-9 (set-up and compile to 4, exclusive hold 5-6); trial B 3-8 (first step
    at 5); the tail 8-9 (A alone, nothing left to start); 9-12 after the last trial."""
    series = [0.0, 0.0, 0.1, 0.2, 0.9, 0.95, 0.5, 0.5, 0.3, 0.0, 0.0, 0.0]
    record = {"started_at": 100.0, "bucket_seconds": 1, "series": series}
    a = {"started_at": 102.0, "wall_seconds": 7.0, "setup_seconds": 1.5, "compile_seconds": 0.5, "exclusive_from_s": 3.0, "exclusive_until_s": 4.0}
    b = {"started_at": 103.0, "wall_seconds": 5.0, "setup_seconds": 1.0, "compile_seconds": 1.0}
    cached = dict(a)  # the same run, served from the cache to another trial: counted once
    earlier = {"started_at": 50.0, "wall_seconds": 70.0, "setup_seconds": 1.0}  # a run of an earlier session
    rows = {r["activity"]: r for r in idle_attribution(record, [a, b, cached, earlier, {"started_at": None}], concurrency=2)}
    assert rows["before the first trial"]["wall_seconds"] == 2 and rows["before the first trial"]["idle_seconds"] == 2
    assert rows["set-up and compile"]["wall_seconds"] == 2  # seconds 2 and 3: A and then both before a first step
    assert rows["set-up and compile"]["idle_seconds"] == pytest.approx(1.7)
    assert rows["a timed window"]["wall_seconds"] == 1 and rows["a timed window"]["busy_share"] == pytest.approx(0.95)
    assert rows["training"]["wall_seconds"] == 3  # 4 (A trains), 6 and 7
    assert rows["the tail"]["wall_seconds"] == 1 and rows["the tail"]["idle_seconds"] == pytest.approx(0.7)
    assert rows["after the last trial"]["idle_seconds"] == 3
    assert rows["between trials"]["wall_seconds"] == 0 and rows["between trials"]["busy_share"] is None
    assert sum(r["wall_seconds"] for r in rows.values()) == len(series)
    assert idle_line(list(rows.values())).startswith("idle 9 s: 3 s after the last trial, 2 s before the first trial, 2 s set-up")
