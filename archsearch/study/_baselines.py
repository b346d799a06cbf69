"""Baselines: architectures a study trains first (`baselines:`), so the search starts from what is known.

An entry is a normal-form architecture file, the name of a seed hybrid in `SEEDS` (built at the space's smallest
width and depth, or at `{seed: NAME, d_model: N, n_layers: N}`), and each is enqueued in Optuna before the
sampler's own trials: with the space's parameters where the space can express the architecture (so the sampler
learns from it like from any trial), else as a fixed architecture that the define-by-run walk passes through.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from .. import _yaml
from .._config import fail, positive_int, read_value
from ..architecture import Architecture, BlockSpec, LayerSpec
from ..errors import ArchsearchError, SpaceError
from ..sampling import Infeasible, sample
from ..space import Constraints, SearchSpace, bounds

BASELINE_ATTR = "baseline"  # the Optuna user attribute (and trials.csv column) naming a trial's baseline
FIXED_ATTR = "baseline_arch"  # the architecture (JSON) of a baseline the space cannot express


@dataclass(frozen=True)
class Baseline:
    name: str
    arch: Architecture


def _layers(n: int, mixer_at: Callable[[int], str], d_model: int) -> tuple[LayerSpec, ...]:
    glu = BlockSpec.make("glu", {}, d_model)
    return tuple(LayerSpec(BlockSpec.make(mixer_at(i), {}, d_model), glu) for i in range(n))


def _two_attention(base: str) -> Callable[[int], Callable[[int], str]]:
    """Attention at layer 2 and layer N/2 + 1 (1-based), the rest `base`: the DeltaNet and H3 papers' hybrids."""
    return lambda n: lambda i: "attn" if i in (1, n // 2) else base


# name -> (what it is, the mixer at each layer given the depth); every layer's channel block is a SwiGLU
SEEDS: dict[str, tuple[str, Callable[[int], Callable[[int], str]]]] = {
    "transformer": ("global attention in every layer", lambda n: lambda i: "attn"),
    "deltanet": ("DeltaNet in every layer", lambda n: lambda i: "deltanet"),
    "deltanet-swa": ("DeltaNet with sliding-window attention every other layer (the DeltaNet paper's local hybrid)",
                     lambda n: lambda i: "swa" if i % 2 == 1 else "deltanet"),
    "deltanet-2attn": ("DeltaNet with two global attention layers, at 2 and N/2 + 1 (the DeltaNet paper's global hybrid)",
                       _two_attention("deltanet")),
    "h3-2attn": ("H3 with two attention layers, at 2 and N/2 + 1 (the H3 paper's hybrid)", _two_attention("h3")),
}


def seed_hybrid(name: str, d_model: int, n_layers: int, vocab_size: int, tie: bool) -> Architecture:
    """The seed hybrid `name` at this width and depth (block parameters: the families' defaults)."""
    return Architecture(d_model, _layers(n_layers, SEEDS[name][1](n_layers), d_model), vocab_size, tie)


def read_baselines(node: _yaml.Node, folder: Path, space: SearchSpace, constraints: Constraints) -> tuple[Baseline, ...]:
    """The study's `baselines:` list, each entry checked against the space's vocabulary and the constraints."""
    if not isinstance(node.value, list):
        raise fail(node, "baselines", f"expected a list of architecture files or seed hybrids ({', '.join(SEEDS)})")
    out: list[Baseline] = []
    for i, item in enumerate(node.value):
        key = f"baselines[{i}]"
        baseline = _read_one(item, key, folder, space)
        if baseline.arch.vocab_size != space.vocab_size:
            raise fail(item, key, f"vocab_size {baseline.arch.vocab_size}, but the space's is {space.vocab_size}")
        broken = constraints.violations(baseline.arch)
        if broken:
            raise fail(item, key, f"{baseline.name} breaks the constraints: {'; '.join(broken)}")
        if baseline.name in (b.name for b in out):
            raise fail(item, key, f"{baseline.name} is listed twice")
        out.append(baseline)
    return tuple(out)


def _read_one(item: _yaml.Node, key: str, folder: Path, space: SearchSpace) -> Baseline:
    d_model, n_layers = bounds(space.d_model)[0], space.depth_bounds()[0]
    tie = bool(bounds(space.tie_embeddings)[0])
    if isinstance(item.value, dict) and set(item.value) == {"name", "arch"}:  # a run directory's inlined baseline
        arch = Architecture.from_yaml(yaml.safe_dump(item.value["arch"].plain()), item.file)
        return Baseline(read_value(str, item.value["name"], f"{key}.name"), arch)
    if isinstance(item.value, dict):
        unknown = set(item.value) - {"seed", "d_model", "n_layers"}
        if unknown or "seed" not in item.value:
            raise fail(item, key, "expected {seed: NAME, d_model: N, n_layers: N} (d_model and n_layers optional)")
        name = read_value(str, item.value["seed"], f"{key}.seed")
        seed_node = item.value["seed"]
        d_model = positive_int(item.value["d_model"], f"{key}.d_model") if "d_model" in item.value else d_model
        n_layers = positive_int(item.value["n_layers"], f"{key}.n_layers") if "n_layers" in item.value else n_layers
    else:
        name, seed_node = read_value(str, item, key), item
        if name.endswith((".yaml", ".yml")):
            path = (folder / name).resolve()
            if not path.exists():
                raise fail(item, key, f"no such file {path}; expected a normal-form architecture file")
            return Baseline(path.stem, Architecture.load(str(path)))
    if name not in SEEDS:
        raise fail(seed_node, key, f"unknown seed hybrid {name!r}; expected an architecture file (.yaml) or one of {', '.join(SEEDS)}")
    try:
        arch = seed_hybrid(name, d_model, n_layers, space.vocab_size, tie)
    except (ArchsearchError, KeyError, ValueError) as e:
        raise fail(item, key, f"{name} at d_model {d_model}, {n_layers} layers: {e}") from None
    problems = arch.violations()
    if problems:
        layer, fam, pname, message = problems[0]
        raise fail(item, key, f"{name} at d_model {d_model}: layer {layer} {fam} {pname}: {message}")
    suffix = "" if (d_model, n_layers) == (bounds(space.d_model)[0], space.depth_bounds()[0]) else f"@{d_model}x{n_layers}"
    return Baseline(name + suffix, arch)


def space_params(space: SearchSpace, arch: Architecture, limit: int = 3000) -> dict[str, Any] | None:
    """The Optuna parameters with which the space's walk draws `arch`, found by Optuna's brute-force walk of the
    space (at most `limit` assignments); None when the space cannot express it (or it is too big to find)."""
    found: dict[str, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        try:
            drawn = sample(space, trial)
        except (Infeasible, SpaceError):
            return 0.0
        if drawn.digest == arch.digest:
            found.update(trial.params)
            trial.study.stop()
        return 0.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(sampler=optuna.samplers.BruteForceSampler(seed=0))
        try:
            study.optimize(objective, n_trials=limit)
        except ValueError:  # a continuous parameter: nothing to walk
            return None
    return found or None


def enqueue_baselines(ostudy: optuna.Study, space: SearchSpace, baselines: tuple[Baseline, ...]) -> list[str]:
    """Queue the baselines not yet in the Optuna study (a resumed run queues none twice); one line each."""
    known = {t.user_attrs.get(BASELINE_ATTR) for t in ostudy.get_trials(deepcopy=False)}
    lines = []
    for b in baselines:
        if b.name in known:
            continue
        params = space_params(space, b.arch)
        if params is not None:
            ostudy.enqueue_trial(params, user_attrs={BASELINE_ATTR: b.name}, skip_if_exists=False)
            lines.append(f"baseline {b.name}: {b.arch.summary()} (as the space's parameters)")
        else:
            ostudy.enqueue_trial({}, user_attrs={BASELINE_ATTR: b.name, FIXED_ATTR: b.arch.to_json()}, skip_if_exists=False)
            lines.append(f"baseline {b.name}: {b.arch.summary()} (outside the space: trained as a fixed architecture)")
    return lines
