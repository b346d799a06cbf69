"""`archsearch run`: load the study, open (or resume) its run directory, and run the trials still missing.

Resuming: the Optuna storage (SQLite in the run directory) is the single source of truth. Trials it holds as
finished are kept; a trial it holds as running was cut off: finished with its row where the driver stored one,
else closed as interrupted and its parameters queued again. The trials table is rebuilt from the storage, and the
new Tuner runs only the trials still missing from the count, its sampler seeded anew (see `resumed_seed`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ..errors import ArchsearchError
from ..metrics import human_bytes
from ..sampling import space_size
from ..space import bounds
from ._baselines import enqueue_baselines
from ._busy import GpuBusy, idle_attribution, idle_line, mps_hint
from ._config import Study
from ._optuna_ray import check_reachable, check_resources, check_tracking, open_storage, recover, start_ray, tune_trials
from ._progress import Progress
from ._rundir import RunDir, RunDirError, TrialsTable, rows_of
from ._samplers import GRID


def run(study_path: str, out: str | None = None, address: str | None = None, trials: int | None = None) -> Path:
    """Run (or resume) a study; returns the run directory."""
    study = Study.load(study_path)
    run_dir = RunDir(Path(out or study.out).resolve())
    if run_dir.path.exists() and not run_dir.path.is_dir():
        raise ArchsearchError(f"--out {run_dir.path}: is a file; expected a run directory (a folder, new or of this study)")
    resuming = run_dir.has_study()
    if resuming:
        kept = run_dir.study()
        if _canonical(kept.frozen) != _canonical(study.frozen):
            raise ArchsearchError(f"{run_dir.path}: this run directory holds a different study; resume it with the same study file or choose another --out")
        study = kept
        print(f"resuming {run_dir.path}")
    total = _trial_count(study, trials or study.search.trials)
    _check_memory(study)
    check_tracking(study)
    if address:
        check_reachable(address)
    if not resuming:  # only once nothing refuses the start: a corrected study then finds no "different study" here
        start_ray(address)
        check_resources(study)
        run_dir.freeze(study)
    storage, ostudy = open_storage(study, run_dir)
    done = recover(ostudy, study)
    for line in enqueue_baselines(ostudy, study.space, study.baselines):
        print(line)
    stored = ostudy.get_trials(deepcopy=False)
    table = TrialsTable(run_dir, rows_of(stored))
    table.write()  # a torn, stale or missing trials.csv is rebuilt before anything else runs
    remaining = total - done
    if remaining <= 0:
        print(f"{run_dir.path}: all {total} trials are finished")
        return run_dir.path
    start_ray(address)
    check_resources(study)
    print(f"study {study.name}: {remaining} of {total} trials to run, {study.search.concurrency} at a time, "
          f"sampler {study.search.sampler}; run directory {run_dir.path}", flush=True)
    with _busy_sampler(study, run_dir) as busy:
        tune_trials(study, run_dir, storage, remaining, table, Progress(study.objectives, total, study.fidelity, busy.line), len(stored))
    return run_dir.path


@contextmanager
def _busy_sampler(study: Study, run_dir: RunDir) -> Iterator[GpuBusy]:
    """Sample the GPUs' busy share while a study on GPUs runs; at the end (an interrupted one too) print it and
    keep it in the run directory."""
    busy = GpuBusy.of_this_node() if study.search.gpu > 0 else GpuBusy(None)
    if study.search.gpu > 0 and not busy.measuring:
        print("GPU busy share: not measured (no NVML here: pip install 'archsearch[gpu]' installs nvidia-ml-py)")
    if busy.measuring and (hint := mps_hint(study.search.gpu)):  # this node has GPUs the trials share
        print(hint)
    busy.start()
    try:
        yield busy
    finally:
        busy.stop()
        if busy.measuring:
            record = busy.record()
            rows: list[dict] = []
            with suppress(RunDirError):  # an unreadable storage has said so already; the share still counts
                rows = run_dir.stored_rows()
            attribution = idle_attribution(record, rows, study.search.concurrency)
            idle = f"; {line}" if (line := idle_line(attribution)) else ""
            print(f"{busy.line() or 'GPU busy: no sample'} of {busy.seconds:.0f} s wall time{idle}", flush=True)
            record["idle"] = {a["activity"]: round(a["idle_seconds"], 1) for a in attribution}
            with suppress(OSError):  # a full disk already stopped the run with its own line
                run_dir.add_busy_record(record)


def _trial_count(study: Study, total: int) -> int:
    """How many trials the run has: `total`, or the grid's size when the grid sampler has fewer points."""
    if study.search.sampler != GRID:
        return total
    size = space_size(study.space)
    if size.assignments is None:
        raise ArchsearchError(f"{study.file}: search.sampler: grid needs a finite space that can be enumerated; it has {size.describe()}")
    if total > size.assignments:
        print(f"the grid has {size.assignments} points: running {size.assignments} trials, not {total}")
        return size.assignments
    return total


def _check_memory(study: Study) -> None:
    """Refuse, before anything starts, proxies whose activations alone cannot fit in this machine's memory (a huge
    seq_len or batch): a lower bound from the largest architecture of the space, so nothing that fits is refused.
    Every training a trial runs is checked: the proxy at its sizes, and each task of the suite at its own. CPU trials
    only: a GPU's memory is not known before a worker runs."""
    p, s = study.proxy, study.search
    if p.device != "cpu" and not (p.device == "auto" and s.gpu == 0):
        return
    width, depth = bounds(study.space.d_model)[1], study.space.depth_bounds()[1]
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for key, run in study.trainings:
        task = run.task_spec() if run.task != "lm" else None
        seq_len, vocab = (task.seq_len, task.vocab_size) if task else (run.seq_len, study.space.vocab_size)
        # float32 activations kept for the backward pass: at least the residual stream per layer, and the logits
        need = 4 * run.batch_size * seq_len * (width * depth * 4 + vocab * 2) * s.concurrency
        if need > have:
            raise ArchsearchError(f"{study.file}: {key}: batch_size {run.batch_size} x seq_len {seq_len:,} needs at least "
                                  f"{human_bytes(need)} for {s.concurrency} concurrent trials of the space's largest "
                                  f"architecture; this machine has {human_bytes(have)}: lower seq_len, batch_size or concurrency")


def _canonical(data: dict) -> str:
    return json.dumps(data, sort_keys=True, default=str)
