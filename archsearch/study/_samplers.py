"""The samplers a study may name (`search.sampler`): one entry each, an Optuna sampler built from the seed and the
number of trials. Adding a sampler is one entry here."""

from __future__ import annotations

from collections.abc import Callable

import optuna


class _Grid(optuna.samplers.BruteForceSampler):
    """Optuna's brute-force walk of a conditional space. The run already caps the trials at the grid's size, and
    the stock sampler's way to end (study.stop) only works inside Study.optimize, which Ray Tune does not use."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def _startup(trials: int) -> int:
    """Random trials before a model-based sampler starts modelling: a quarter of the study, 2 to 10."""
    return max(2, min(10, trials // 4))


SAMPLERS: dict[str, Callable[[int, int], optuna.samplers.BaseSampler]] = {
    "nsga2": lambda seed, trials: optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 4))),
    "tpe": lambda seed, trials: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=_startup(trials)),
    "gp": lambda seed, trials: optuna.samplers.GPSampler(seed=seed, n_startup_trials=_startup(trials)),
    "random": lambda seed, trials: optuna.samplers.RandomSampler(seed=seed),
    "grid": lambda seed, trials: _Grid(seed=seed),
}
GRID = "grid"  # the sampler that walks a finite space exhaustively: the run caps its trials at the space's size
