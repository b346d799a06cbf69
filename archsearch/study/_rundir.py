"""The run directory's format: what lives where, and how each file is read and written. Nothing else knows.

    study.yaml, space.yaml   the study as it was started, its space inlined (a resumed run uses these)
    trials.csv               one row per finished trial: TABLE_COLUMNS, then p:<parameter> columns
    cache.jsonl              finished results by architecture digest and proxy settings, one JSON line each
    optuna.db                the Optuna storage (SQLite), the study's source of truth
    ray/                     Ray Tune's experiment state
    weights/trial_N.safetensors   proxy weights, with search.save_weights

Every write that replaces a file goes through a temporary file and a rename, so readers never see half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..architecture import Architecture
from ..errors import ArchsearchError
from ..metrics import METRICS
from ._config import Study

if TYPE_CHECKING:
    import pandas as pd

TABLE_COLUMNS = ["trial", "status", "reason", "summary", "digest", "arch", *METRICS, "cached"]
CONFIG_KEYS = ("trial_number", "arch", "digest", "reason")  # what a trial's config carries besides its parameters


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
    def cache_file(self) -> Path:
        return self.path / "cache.jsonl"

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{self.path / 'optuna.db'}"

    @property
    def ray_storage(self) -> Path:
        return self.path / "ray"

    def weights_file(self, trial: int) -> Path:
        return self.path / "weights" / f"trial_{trial}.safetensors"

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
        import pandas as pd

        f = self.trials_file
        return pd.read_csv(f) if f.exists() and f.stat().st_size else pd.DataFrame(columns=TABLE_COLUMNS)

    def write_trials(self, rows: list[dict[str, Any]]) -> None:
        import pandas as pd

        frame = pd.DataFrame(sorted(rows, key=lambda r: r["trial"]))
        columns = TABLE_COLUMNS + sorted(c for c in frame.columns if c not in TABLE_COLUMNS)
        tmp = self.trials_file.with_suffix(".tmp")
        frame.reindex(columns=columns).to_csv(tmp, index=False)
        os.replace(tmp, self.trials_file)

    # --- the result cache (written by trials as they finish) ----------------------------------------------------
    def cached_result(self, digest: str, proxy_key: str) -> dict | None:
        """A finished result for this architecture under these proxy settings, if any trial produced one."""
        if not self.cache_file.exists():
            return None
        with open(self.cache_file) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off by a killed trial: its result is recomputed, never fatal
                if isinstance(entry, dict) and entry.get("digest") == digest and entry.get("proxy") == proxy_key:
                    return entry.get("result")
        return None

    def cache_result(self, digest: str, proxy_key: str, result: dict) -> None:
        with open(self.cache_file, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # trials finish concurrently; one line each, whole
            f.write(json.dumps({"digest": digest, "proxy": proxy_key, "result": result}) + "\n")

    def weights_to_write(self, trial: int) -> str:
        """Where a trial saves its proxy weights (the folder is made)."""
        path = self.weights_file(trial)
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)

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
        if not self.validation_records_file.exists():
            return []
        out = []
        with open(self.validation_records_file) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict):
                    out.append(entry)
        return out

    def add_validation_record(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.validation_records_file, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            end = f.seek(0, os.SEEK_END)
            if end:
                f.seek(end - 1)
                if f.read(1) != b"\n":
                    f.write(b"\n")  # end a line cut off by a kill, so the new record starts a line of its own
            f.write((json.dumps(record) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())  # a finished training is hours of GPU time on a real study: on disk before the next


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class TrialsTable:
    """The trials table as the driver keeps it: one row per finished trial, rewritten as each finishes (the driver
    is its only writer)."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self.rows: dict[int, dict[str, Any]] = {int(r["trial"]): r for r in run_dir.read_trials().to_dict("records")}

    def add(self, config: dict[str, Any], result: dict[str, Any] | None, error: str | None = None) -> dict[str, Any]:
        """Record a finished trial from its config and last result (or the error that ended its process)."""
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
        row.update(trial=config["trial_number"], status=status, reason=result.get("reason") or config.get("reason") or "",
                   summary=summary, digest=config.get("digest", ""), arch=arch or "", cached=bool(result.get("cached", False)))
        row.update({f"p:{k}": v for k, v in config.items() if k not in CONFIG_KEYS})
        self.rows[row["trial"]] = row
        self.write()
        return row

    def write(self) -> None:
        self.run_dir.write_trials(list(self.rows.values()))


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
        """The trial's saved proxy weights, or those of an ok trial of the same architecture (whose result it
        reused); None when the run kept none."""
        if self.weights_file(trial).exists():
            return self.weights_file(trial)
        same = self.trials[(self.trials["digest"] == digest) & (self.trials["status"] == "ok")]
        for other in sorted(int(t) for t in same["trial"]):
            if self.weights_file(other).exists():
                return self.weights_file(other)
        return None


def load_run(path: str | Path, require_trials: bool = False) -> Run:
    """Read a run directory written by `archsearch run`; with `require_trials`, one that has a trials table."""
    run_dir = RunDir(path)
    p = run_dir.path
    if require_trials and not p.is_dir():
        raise RunDirError(f"{p}: no such run directory; expected the --out folder of archsearch run")
    if require_trials and not run_dir.trials_file.exists():
        raise RunDirError(f"{run_dir.trials_file}: missing; expected the trials table archsearch run writes (has the run finished a trial?)")
    if not run_dir.has_study():
        raise RunDirError(f"{p}: not a run directory (no study.yaml); expected the --out folder of archsearch run")
    return Run(p, run_dir.study(), run_dir.read_trials())


def freeze(study: Study, path: str | Path) -> None:
    """Write the study, with its space inlined, into the run directory at `path`."""
    RunDir(path).freeze(study)
