"""The run directory's format: what lives where, and how each file is read and written. Nothing else knows.

    study.yaml, space.yaml   the study as it was started, its space inlined (a resumed run uses these)
    optuna.db                the Optuna storage (SQLite), the study's single source of truth: each finished
                             trial carries its table row as the user attribute ROW_ATTR, set before Optuna is
                             told the outcome, so a trial is never finished without its row
    trials.csv               one row per finished trial (TABLE_COLUMNS, then p:<parameter> columns), derived from
                             the storage: rewritten after each trial, rebuilt from the storage on every resume
    ray/                     Ray Tune's experiment state (each trial's reported results: its learning curve)
    compile-cache/           Inductor's and Triton's caches, shared by the trials whose node sees this folder (a
                             layer kind compiles once); made by the driver, never by a trial
    tensorboard/trial_N/     TensorBoard event files of trial N's reports, with search.tracking: [tensorboard]
    wandb/                   Weights & Biases' local files (offline runs to sync), with search.tracking: [wandb]
    weights/trial_N.safetensors   proxy weights, with search.save_weights
    checkpoints/trial_N.pt   a running trial's state at its last rung, with a fidelity ladder (N: the trial, or
                             the one it runs again after a kill, so that it resumes); deleted as the trial finishes
    gpu_busy.jsonl           each session's GPU busy share (NVML), for a study on GPUs: overall, second by second,
                             and its idle seconds by what the trials were doing
    validation.json(l)       `archsearch validate`'s report and its finished trainings

Every write that replaces a file goes through a temporary file and a rename, so readers never see half of one.
Only the driver writes here: trials, on whichever node, hand their weights and checkpoints to it as bytes (their
compile caches aside); what is known of each architecture comes from the storage's rows.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..architecture import Architecture
from ..errors import ArchsearchError, ConfigError
from ..metrics import METRICS, OBJECTIVES
from ._config import Study
from ._samplers import KNOWN, REDRAWN

if TYPE_CHECKING:
    import pandas as pd

TABLE_COLUMNS = ["trial", "status", "baseline", "reason", "summary", "digest", "arch", *METRICS, "seed"]
# with search.repeats > 1: each objective's standard deviation over the seeds and the seeds it is the mean of
SPREAD_COLUMNS = [f"{m}_{s}" for m in OBJECTIVES for s in ("std", "n")]
TIMELINE_COLUMNS = ["started_at", "exclusive_from_s", "exclusive_until_s"]  # where the run lies in time (study/_busy.py)
CONFIG_KEYS = ("trial_number", "arch", "digest", "reason", "seed", "baseline", "checkpoint_of")  # what a config carries besides parameters
ROW_ATTR = "row"  # the Optuna user attribute that holds a finished trial's table row


class RunDirError(ArchsearchError):
    """A folder that is not (or not yet) the run directory a command needs."""


class RunDir:
    """Paths and files of one run directory (which need not exist yet)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def study_file(self) -> Path:
        return self.path / "study.yaml"

    @property
    def trials_file(self) -> Path:
        return self.path / "trials.csv"

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.path / 'optuna.db'}"

    @property
    def ray_storage(self) -> Path:
        return self.path / "ray"

    @property
    def compile_cache(self) -> Path:
        """Inductor's and Triton's caches, shared by the study's trials: a layer kind compiles once per study."""
        return self.path / "compile-cache"

    def make_compile_cache(self) -> None:
        """Make the compile cache's folder (the driver does, before trials start: a trial uses it where it sees it)."""
        self.compile_cache.mkdir(parents=True, exist_ok=True)

    @property
    def tensorboard(self) -> Path:
        """TensorBoard's log folder, one sub-folder per trial: `tensorboard --logdir RUN/tensorboard`."""
        return self.path / "tensorboard"

    def tensorboard_trial(self, trial: int) -> Path:
        return self.tensorboard / f"trial_{trial}"

    @property
    def wandb(self) -> Path:
        """Where Weights & Biases keeps its local files (an offline run is synced from here: `wandb sync`)."""
        return self.path / "wandb"

    def weights_file(self, trial: int) -> Path:
        return self.path / "weights" / f"trial_{trial}.safetensors"

    def checkpoint_file(self, trial: int) -> Path:
        return self.path / "checkpoints" / f"trial_{trial}.pt"

    # --- the study ----------------------------------------------------------------------------------------------
    def has_study(self) -> bool:
        return self.study_file.exists()

    def freeze(self, study: Study) -> None:
        """Write the study, with its space inlined (the run keeps what it was started with)."""
        self.path.mkdir(parents=True, exist_ok=True)
        _write(self.study_file, yaml.safe_dump(study.frozen, sort_keys=False))
        _write(self.path / "space.yaml", yaml.safe_dump(study.frozen["space"], sort_keys=False))

    def study(self) -> Study:
        return Study.load(self.study_file)

    # --- the trials table ---------------------------------------------------------------------------------------
    def read_trials(self) -> pd.DataFrame:
        """The trials table as the storage holds it (trials.csv may lag it by the trial a kill cut off, and may be
        torn or missing: the next resume rewrites it); trials.csv itself only where there is no storage."""
        import pandas as pd

        rows = self.stored_rows()
        if rows or not self.trials_file.exists():
            return pd.read_csv(io.StringIO(_frame(rows).to_csv(index=False)))  # the dtypes trials.csv reads with
        try:
            return pd.read_csv(self.trials_file)
        except (ValueError, OSError, UnicodeDecodeError) as e:  # pandas' errors for a torn or garbage file
            raise RunDirError(f"{self.trials_file}: not a readable trials table ({str(e).splitlines()[0][:200]})") from None

    def stored_rows(self) -> list[dict[str, Any]]:
        """The rows the Optuna storage holds (none when there is no storage yet); one line when it is unreadable."""
        db = self.path / "optuna.db"
        if not db.exists() or not db.stat().st_size:
            return []
        import optuna
        import sqlalchemy.exc

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            trials = [t for s in optuna.get_all_study_summaries(self.optuna_url) for t in
                      optuna.load_study(study_name=s.study_name, storage=self.optuna_url).get_trials(deepcopy=False)]
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, KeyError, RuntimeError) as e:
            raise RunDirError(f"{db}: not a readable Optuna storage ({str(e).splitlines()[0][:200]}); expected the optuna.db that archsearch run writes") from None
        return rows_of(trials)

    def optuna_study(self, name: str):  # -> optuna.Study | None
        """The run's trials as an in-memory Optuna study (draws that were no trials, infeasible or measured
        already, left out: a known draw repeats a trial's values), or None when the run has no storage."""
        import optuna

        if not (self.path / "optuna.db").exists():
            return None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        stored = optuna.load_study(study_name=name, storage=self.optuna_url)
        study = optuna.create_study(study_name=name, directions=stored.directions)
        study.add_trials([t for t in stored.get_trials(deepcopy=False) if t.user_attrs.get("status") not in (REDRAWN, KNOWN)])
        return study

    def learning_curves(self) -> dict[int, list[dict[str, float]]]:
        """Each trial's intermediate evaluations ({tokens, val_loss}, by tokens) by trial number, from the results
        Ray Tune recorded in the trials' folders under ray/. A reused result reports once, at the end."""
        curves: dict[int, list[dict[str, float]]] = {}
        for row in self._results():
            number = (row.get("config") or {}).get("trial_number")
            if number is not None and row.get("val_loss") is not None and row.get("tokens") is not None:
                point = {"tokens": row["tokens"], "val_loss": row["val_loss"]}
                if point not in curves.setdefault(int(number), []):
                    curves[int(number)].append(point)
        return {n: sorted(points, key=lambda p: p["tokens"]) for n, points in sorted(curves.items())}

    def write_trials(self, rows: list[dict[str, Any]]) -> None:
        tmp = self.trials_file.with_suffix(".tmp")
        _frame(rows).to_csv(tmp, index=False)
        os.replace(tmp, self.trials_file)

    def write_weights(self, trial: int, data: bytes) -> None:
        """Save a trial's proxy weights (safetensors bytes)."""
        _write(self.weights_file(trial), data)

    def save_checkpoint(self, trial: int, data: bytes) -> None:
        """Keep trial `trial`'s state at its last rung (bytes of torch.save), replacing the one before."""
        _write(self.checkpoint_file(trial), data)

    def load_checkpoint(self, trial: int) -> bytes | None:
        """Trial `trial`'s last saved state, or None when it saved none."""
        try:
            return self.checkpoint_file(trial).read_bytes()
        except FileNotFoundError:
            return None

    def remove_checkpoint(self, trial: int) -> None:
        """Delete a finished trial's checkpoint (one of a model and its optimizer: big)."""
        self.checkpoint_file(trial).unlink(missing_ok=True)

    def remove_checkpoints(self) -> None:
        """Delete every checkpoint (no trial is running), also one a stopped trial's process saved late."""
        folder = self.checkpoint_file(0).parent
        for path in folder.glob("*.pt*") if folder.is_dir() else ():
            path.unlink(missing_ok=True)

    def rung_points(self) -> list[tuple[int, dict[str, Any]]]:
        """The ok results that carry a rung, (rung, result with its trial's config), from those Ray Tune recorded
        under ray/ (what a resumed study's fidelity ladder ranks new trials against)."""
        return [(row["rung"], row) for row in self._results()
                if isinstance(row.get("config"), dict) and isinstance(row.get("rung"), int) and row.get("status") == "ok"]

    def _results(self):
        """Every result Ray Tune recorded in the trials' folders under ray/, file by file."""
        for path in sorted(self.ray_storage.glob("*/*/result.json")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off by an interrupted run
                if isinstance(row, dict):
                    yield row

    # --- the proxy's validation (archsearch validate) -------------------------------------------------------------
    #   validation.jsonl   one finished training per line (append-only: a killed validation resumes from it)
    #   validation.json    the report: rank agreement of the proxy with F x its budget (what `front` prints)
    @property
    def validation_file(self) -> Path:
        return self.path / "validation.json"

    @property
    def validation_records_file(self) -> Path:
        return self.path / "validation.jsonl"

    def read_validation(self) -> dict | None:
        """The validation report, or None when the proxy was never validated here."""
        f = self.validation_file
        if not f.exists():
            return None
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise RunDirError(f"{f}:{e.lineno}: not JSON ({e.msg}); expected the report archsearch validate writes (delete it and validate again)") from None

    def write_validation(self, report: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        _write(self.validation_file, json.dumps(report, indent=1))

    def validation_records(self) -> list[dict]:
        """The finished trainings of a validation, in order; a line cut off by a kill is dropped (retrained)."""
        return _read_lines(self.validation_records_file)

    def add_validation_record(self, record: dict) -> None:
        _append_line(self.validation_records_file, record)  # a finished training is hours of GPU time on a real study

    # --- how busy the study kept its GPUs (study/_busy.py) ----------------------------------------------------------
    #   gpu_busy.jsonl     one line per session of the run (a resumed study adds one): wall time, samples, each
    #                      GPU's busy share, the series of the GPUs' mean share per bucket_seconds, and `idle`:
    #                      the idle seconds by activity (study/_busy.py's idle_attribution)
    @property
    def busy_file(self) -> Path:
        return self.path / "gpu_busy.jsonl"

    def busy_records(self) -> list[dict]:
        return _read_lines(self.busy_file)

    def add_busy_record(self, record: dict) -> None:
        _append_line(self.busy_file, record)


def _read_lines(path: Path) -> list[dict]:
    """The JSON objects of an append-only file, in order; a line cut off by a kill is dropped."""
    if not path.exists():
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
    return out


def _append_line(path: Path, record: dict) -> None:
    """Append one JSON line, on disk before this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                f.write(b"\n")  # end a line cut off by a kill, so the new record starts a line of its own
        f.write((json.dumps(record) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def rows_of(trials: list) -> list[dict[str, Any]]:
    """The table rows that these Optuna trials carry (finished ones, and cut-off ones whose row was stored)."""
    return sorted((t.user_attrs[ROW_ATTR] for t in trials if isinstance(t.user_attrs.get(ROW_ATTR), dict)),
                  key=lambda r: r["trial"])


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(sorted(rows, key=lambda r: r["trial"]))
    spreads = [c for c in SPREAD_COLUMNS if c in frame.columns]
    return frame.reindex(columns=TABLE_COLUMNS + spreads + sorted(c for c in frame.columns if c not in TABLE_COLUMNS + spreads))


def _write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


class TrialsTable:
    """The trials table as the driver keeps it: the storage's rows, rewritten as each trial finishes (the driver
    is its only writer)."""

    def __init__(self, run_dir: RunDir, rows: list[dict[str, Any]]) -> None:
        self.run_dir = run_dir
        self.rows: dict[int, dict[str, Any]] = {int(r["trial"]): r for r in rows}

    def add(self, row: dict[str, Any]) -> None:
        """Record a finished trial's row (stored in the storage already) and rewrite the table."""
        self.rows[int(row["trial"])] = row
        self.write()

    def write(self) -> None:
        self.run_dir.write_trials(list(self.rows.values()))


def trial_row(config: dict[str, Any], result: dict[str, Any] | None, error: str | None = None) -> dict[str, Any]:
    """A finished trial's table row from its config and last result (or the error that ended its process)."""
    result = dict(result or {})
    status = result.get("status", "error")
    if error is not None:
        status, result["reason"] = "error", error
    elif status == "running":
        status = "pruned"
    arch = config.get("arch")
    summary = Architecture.from_json(arch).summary() if arch else ""
    result.setdefault("tokens_trained", result.get("tokens"))  # a pruned trial's last report says how far it got
    row = {c: result.get(c) for c in TABLE_COLUMNS}
    row.update(trial=config["trial_number"], status=status, baseline=config.get("baseline", ""), reason=result.get("reason") or config.get("reason") or "",
               summary=summary, digest=config.get("digest", ""), arch=arch or "", seed=config.get("seed"))
    row.update({c: result[c] for c in SPREAD_COLUMNS + TIMELINE_COLUMNS if c in result})
    row.update({f"p:{k}": v for k, v in config.items() if k not in CONFIG_KEYS})
    return row


@dataclass
class Run:
    """A run directory as `front` and `export` read it."""

    path: Path
    study: Study
    trials: Any  # pandas.DataFrame, one row per finished trial (columns: TABLE_COLUMNS, then p:<parameter>)

    @property
    def trials_file(self) -> Path:
        return RunDir(self.path).trials_file

    def weights_file(self, trial: int) -> Path:
        """Where trial `trial`'s proxy weights are saved (they may be missing)."""
        return RunDir(self.path).weights_file(trial)

    def find_weights(self, trial: int, digest: str) -> Path | None:
        """The trial's saved proxy weights, or those of another ok trial of the same architecture (a re-measurement,
        or a result that a run of an older version reused); None when the run kept none."""
        if self.weights_file(trial).exists():
            return self.weights_file(trial)
        same = self.trials[(self.trials["digest"] == digest) & (self.trials["status"] == "ok")]
        for other in sorted(int(t) for t in same["trial"]):
            if self.weights_file(other).exists():
                return self.weights_file(other)
        return None


def load_run(path: str | Path, require_trials: bool = False, trust_plugins: bool = False) -> Run:
    """Read a run directory written by `archsearch run`; with `require_trials`, one that has a trials table. The
    study's plugins are imported only with `trust_plugins` (reading someone's run must not run their code)."""
    run_dir = RunDir(path)
    p = run_dir.path
    if require_trials and not p.is_dir():
        raise RunDirError(f"{p}: no such run directory; expected the --out folder of archsearch run")
    if require_trials and not run_dir.trials_file.exists() and not (p / "optuna.db").exists():
        raise RunDirError(f"{run_dir.trials_file}: missing; expected the trials table archsearch run writes (has the run finished a trial?)")
    if not run_dir.has_study():
        raise RunDirError(f"{p}: not a run directory (no study.yaml); expected the --out folder of archsearch run")
    try:
        study = Study.load(run_dir.study_file, plugins=trust_plugins)
    except ConfigError as e:
        if trust_plugins or not (yaml.safe_load(run_dir.study_file.read_text()) or {}).get("plugins"):
            raise
        raise RunDirError(f"{e} (the run's plugins were not imported: pass --trust-plugins to import them, which runs their code)") from None
    return Run(p, study, run_dir.read_trials())


def freeze(study: Study, path: str | Path) -> None:
    """Write the study, with its space inlined, into the run directory at `path`."""
    RunDir(path).freeze(study)
