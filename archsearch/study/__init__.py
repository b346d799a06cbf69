"""The study: a search space, proxy settings, objectives and search settings -> a run directory of trials.

`archsearch run` (`run`) drives a Ray Tune `Tuner` whose search algorithm is Optuna walking the space's
define-by-run sampler. The Optuna storage (SQLite, in the run directory) is the study's source of truth: running
again on the same directory resumes from it, so finished trials are never lost or run twice.

Modules: `_config` (study files -> `Study`), `_synthetic` (a study's synthetic task and suite), `_samplers` (the
sampler table, the constraint-aware ask loop), `_baselines` (the seed hybrids and `baselines:`), `_repeats` (a trial over its seeds), `_replay` (samplers
replayed on a tabular benchmark), `_rundir` (the run directory's format), `_trial` (one trial in its worker),
`_optuna_ray` (the Optuna and Ray glue), `_ladder` (the fidelity ladder's Ray Tune scheduler), `_progress` (what a run prints), `_runner` (the orchestration).
"""

from __future__ import annotations

from pathlib import Path

from ..metrics import DIRECTIONS
from ._baselines import SEEDS, Baseline, seed_hybrid
from ._config import Fidelity, Objective, SearchSettings, Study, import_plugins
from ._repeats import over_seeds
from ._replay import Replay, Table, TableError, plot_replays, replay, replay_all, summarise
from ._rundir import TABLE_COLUMNS, Run, RunDir, RunDirError, freeze, load_run
from ._samplers import SAMPLERS, InfeasibleSpace, SpaceExhausted


def run(study_path: str, out: str | None = None, address: str | None = None, trials: int | None = None) -> Path:
    """Run (or resume) a study; returns the run directory. (Ray is imported here, not with this package.)"""
    from . import _runner

    return _runner.run(study_path, out=out, address=address, trials=trials)

__all__ = [
    "DIRECTIONS", "SAMPLERS", "SEEDS", "TABLE_COLUMNS", "Baseline", "Fidelity", "InfeasibleSpace", "Objective",
    "Replay", "Run", "RunDir", "RunDirError", "SearchSettings", "Study", "Table", "TableError", "freeze",
    "import_plugins", "load_run", "over_seeds", "plot_replays", "replay", "replay_all", "run", "seed_hybrid", "SpaceExhausted", "summarise",
]
