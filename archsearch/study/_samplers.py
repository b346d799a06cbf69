"""The samplers a study may name (`search.sampler`), their settings, and the constraint-aware ask loop.

Each entry of `SAMPLERS` is an Optuna sampler class and its defaults sized to the study's number of trials; a
study's `search.<sampler>: {...}` keys are passed to the constructor on top of them (checked against its
signature when the study is read). Adding a sampler is one entry here.

Constraints reach the model-based samplers through the trial: the define-by-run walk records each trial's
constraint values (<= 0 feasible) with `record_constraints` (Optuna 5's `Trial.set_constraint`, or Optuna 4's
`constraints_func` reading them back), and `ask_feasible`
redraws an infeasible architecture (told to Optuna as a pruned trial with its violations, so TPE and GP learn the
infeasible region) instead of spending a trial on it, and an architecture measured already (told its known result,
so the sampler learns it again, without training it again).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna

from ..architecture import Architecture
from ..errors import ArchsearchError
from ..sampling import Infeasible, OptunaSampler, sample
from ..space import Constraints
from ._baselines import BASELINE_ATTR, FIXED_ATTR

if TYPE_CHECKING:
    from ._config import Study

CONSTRAINTS_ATTR = "constraints"  # a trial's constraint values: [family rules, then one per bound], <= 0 feasible
REDRAWN = "redrawn"  # the `status` user attribute of an infeasible draw that did not use up a trial
KNOWN = "known"  # the `status` user attribute of a draw of an architecture measured already: told its result, not a trial


class _Grid(optuna.samplers.BruteForceSampler):
    """Optuna's brute-force walk of a conditional space. The run already caps the trials at the grid's size, and
    the stock sampler's way to end (study.stop) only works inside Study.optimize, which Ray Tune does not use."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def _startup(trials: int) -> int:
    """Random trials before a model-based sampler starts modelling: a quarter of the study, 2 to 10."""
    return max(2, min(10, trials // 4))


def _population(trials: int) -> int:
    """NSGA-II's population: a sixth of the study, 4 to 50, so that a study breeds six generations or more (a
    large one keeps Optuna's default). Replayed on a 68-architecture table over 20 seeds, populations of 4 to 12
    reached 95% of the true hypervolume as fast as random search, 17 and 22 slower (benchmarks/RESULTS.md)."""
    return max(4, min(50, trials // 6))


@dataclass(frozen=True)
class SamplerEntry:
    """An Optuna sampler class, the defaults the study sizes from its trials, and whether it takes constraints."""

    cls: type[optuna.samplers.BaseSampler]
    defaults: Callable[[int], dict[str, Any]] = lambda trials: {}
    constrained: bool = False  # takes constraints_func
    set_by_study: tuple[str, ...] = field(default=("seed", "constraints_func"))

    def settable(self) -> dict[str, inspect.Parameter]:
        """The constructor's keywords a study file may set."""
        params = inspect.signature(self.cls.__init__).parameters
        return {n: p for n, p in params.items()
                if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n not in self.set_by_study}

    def build(self, seed: int, trials: int, options: Mapping[str, Any] | None = None) -> optuna.samplers.BaseSampler:
        """The sampler for a study of `trials` trials: our defaults, then the study's `options`."""
        kwargs = {**self.defaults(trials), **(options or {})}
        if self.constrained and not NATIVE_CONSTRAINTS:
            kwargs["constraints_func"] = constraints_func
        return self.cls(seed=seed, **kwargs)


SAMPLERS: dict[str, SamplerEntry] = {
    "nsga2": SamplerEntry(optuna.samplers.NSGAIISampler, lambda t: {"population_size": _population(t)}, constrained=True),
    "tpe": SamplerEntry(optuna.samplers.TPESampler, lambda t: {"multivariate": True, "group": True, "n_startup_trials": _startup(t)},
                        constrained=True),
    # a conditional parameter (a window only where swa is drawn) is sampled independently: expected, not a warning
    "gp": SamplerEntry(optuna.samplers.GPSampler, lambda t: {"n_startup_trials": _startup(t), "warn_independent_sampling": False},
                       constrained=True),
    "random": SamplerEntry(optuna.samplers.RandomSampler),
    "grid": SamplerEntry(_Grid),
}
GRID = "grid"  # the sampler that walks a finite space exhaustively: the run caps its trials at the space's size


def check_option(sampler: str, name: str, value: Any, trials: int) -> str | None:
    """What is wrong with setting `name: value` on `sampler` (None when the constructor takes it)."""
    entry = SAMPLERS[sampler]
    settable = entry.settable()
    if name in entry.set_by_study:
        return f"set by the study (search.seed, and the study's constraints), not a {sampler} setting"
    if name not in settable:
        return f"unknown {entry.cls.__name__} setting; expected one of {', '.join(settable)}"
    default = settable[name].default
    if default is not None and default is not inspect.Parameter.empty and not isinstance(default, bool | int | float | str):
        return f"takes a Python object ({type(default).__name__}), which a study file cannot give"
    try:
        entry.build(0, trials, {name: value})
    except Exception as e:  # the constructor's own check is the truth: its message, on one line
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"{entry.cls.__name__} refuses {value!r}: {message}"
    return None


# --- constraints --------------------------------------------------------------------------------------------------


def constraint_values(constraints: Constraints, arch: Any | None) -> list[float]:
    """Optuna's constraint values for an architecture (None: one that broke a block family's rule): the family
    rules first (1 broken, 0 met), then each bound's relative excess (<= 0 met)."""
    if arch is None:
        return [1.0] + [1.0] * len(constraints.bounds)
    out = [0.0]
    costs: dict[tuple[int, int], Any] = {}
    for b in constraints.bounds:
        if (b.context, b.dtype_bytes) not in costs:
            costs[b.context, b.dtype_bytes] = arch.cost(b.context, b.dtype_bytes)
        value = float(getattr(costs[b.context, b.dtype_bytes], b.metric))
        excess = []
        if b.high is not None:
            excess.append((value - b.high) / max(abs(b.high), 1e-12))
        if b.low is not None:
            excess.append((b.low - value) / max(abs(b.low), 1e-12))
        out.append(max(excess, default=-1.0))
    return out


# Optuna 5 reads constraints recorded on the trial (`Trial.set_constraint`) and deprecates `constraints_func`;
# Optuna 4 has only `constraints_func`, which reads back what the walk recorded as a user attribute.
NATIVE_CONSTRAINTS = hasattr(optuna.Trial, "set_constraint")


def record_constraints(trial: Any, constraints: Constraints, arch: Any | None) -> None:
    """Record a drawn architecture's constraint values on its Optuna trial (None: it broke a family rule)."""
    if CONSTRAINTS_ATTR in trial.user_attrs:
        return  # drawn again by the same trial (Ray's searcher re-runs the walk on the trial we asked for)
    values = constraint_values(constraints, arch)
    trial.set_user_attr(CONSTRAINTS_ATTR, values)
    if NATIVE_CONSTRAINTS:
        names = ["family_rules", *(f"{i}:{b.metric}" for i, b in enumerate(constraints.bounds))]
        for name, value in zip(names, values, strict=True):
            trial.set_constraint(name, value)


def constraints_func(trial: optuna.trial.FrozenTrial) -> list[float]:
    """Optuna 4's `constraints_func`: the values `record_constraints` kept (a trial without them is feasible)."""
    return list(trial.user_attrs.get(CONSTRAINTS_ATTR) or [0.0])


class InfeasibleSpace(ArchsearchError):
    """Every one of a trial's bounded draws was infeasible."""


def draw(study: Study, trial: optuna.Trial) -> dict[str, Any]:
    """The define-by-run walk: the trial's architecture (a baseline's, or drawn from the space by asking the trial
    for each value) with its constraints recorded, as the config a trial runs from."""
    number, fixed, baseline = trial.number, trial.user_attrs.get(FIXED_ATTR), trial.user_attrs.get(BASELINE_ATTR, "")
    try:
        arch = Architecture.from_json(fixed) if fixed else sample(study.space, OptunaSampler(trial))
    except Infeasible as e:
        record_constraints(trial, study.constraints, None)
        return {"trial_number": number, "arch": None, "digest": "", "reason": str(e), "baseline": baseline}
    record_constraints(trial, study.constraints, arch)
    return {"trial_number": number, "arch": arch.to_json(), "digest": arch.digest,
            "reason": "; ".join(study.violations(arch)), "baseline": baseline}


class SpaceExhausted(ArchsearchError):
    """Every one of a trial's bounded draws was an architecture measured already (or an infeasible one)."""


# What is known of an architecture (by digest): the state and values Optuna is told of a draw of it, or None when
# it is new and its draw becomes a trial.
Known = Callable[[str], "tuple[optuna.trial.TrialState, list[float] | None] | None"]


def ask_feasible(ostudy: optuna.Study, walk: Callable[[optuna.Trial], dict[str, Any]], count_infeasible: bool,
                 max_draws: int, known: Known = lambda digest: None) -> tuple[optuna.Trial, dict[str, Any]]:
    """Ask Optuna for a trial whose architecture `walk` (`draw` for a study, returning a config with an empty
    `reason` when feasible) accepts and `known` does not know. Unless `count_infeasible`, an infeasible draw is told
    as pruned (its constraint values recorded, status `redrawn`); a draw of a known architecture is told what is
    known of it (status `known`); either way Optuna is asked again, at most `max_draws` times; then one line:
    InfeasibleSpace when every draw was infeasible, else SpaceExhausted."""
    reasons: dict[str, int] = {}
    repeated = 0
    for _ in range(max_draws):
        trial = ostudy.ask()
        config = walk(trial)
        if config.get("reason") and not count_infeasible:
            reasons[config["reason"]] = reasons.get(config["reason"], 0) + 1
            trial.set_user_attr("status", REDRAWN)
            trial.set_user_attr("reason", str(config["reason"])[:500])
            ostudy.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        told = known(config["digest"]) if config.get("digest") else None
        if told is None:
            return trial, config
        repeated += 1
        trial.set_user_attr("status", KNOWN)
        ostudy.tell(trial, told[1], state=told[0])
    if repeated:
        raise SpaceExhausted(f"{max_draws} draws in a row gave architectures measured already ({repeated}) or infeasible "
                             f"({max_draws - repeated}): the space looks exhausted; raise search.max_draws to look further")
    common = max(reasons, key=reasons.get)
    raise InfeasibleSpace(f"{max_draws} draws in a row were infeasible (most often: {common}); loosen the constraints "
                          "or the space, raise search.max_draws, or set search.count_infeasible: true")
