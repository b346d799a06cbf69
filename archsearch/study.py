"""The study: a search space, proxy settings, objectives and search settings -> a run directory of trials.

`archsearch run` drives a Ray Tune `Tuner` whose search algorithm is Optuna (`OptunaSearch`) walking the space's
define-by-run sampler. The Optuna storage (SQLite, in the run directory) is the study's source of truth: running
again on the same directory resumes from it, so finished trials are never lost or run twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import _yaml
from .errors import ArchsearchError, SpaceError
from .proxy import DataSpec, ProxySettings, TaskSpec
from .space import Constraints, SearchSpace, _parse, _Parser

METRICS = {  # every number a trial produces, with its natural direction
    "val_loss": "minimize",
    "perplexity": "minimize",
    "bits_per_byte": "minimize",
    "accuracy": "maximize",
    "train_tokens_per_s": "maximize",
    "prefill_tokens_per_s": "maximize",
    "decode_tokens_per_s": "maximize",
    "peak_memory_bytes": "minimize",
    "params": "minimize",
    "active_params": "minimize",
    "flops_per_token": "minimize",
    "state_bytes": "minimize",
}
DIRECTIONS = {"min": "minimize", "minimize": "minimize", "max": "maximize", "maximize": "maximize"}
SAMPLERS = ("nsga2", "tpe", "gp", "random", "grid")
TOP_KEYS = {"name", "description", "space", "proxy", "objectives", "constraints", "search", "out", "plugins"}
SEARCH_KEYS = {"sampler", "seed", "trials", "concurrency", "resources", "early_stopping", "retries", "save_weights"}


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # minimize or maximize


@dataclass(frozen=True)
class EarlyStopping:
    """ASHA on the validation loss: trials are compared at rungs spaced by `reduction_factor`."""

    grace: float = 0.25  # the first rung, as a share of the token budget
    reduction_factor: int = 3


@dataclass(frozen=True)
class SearchSettings:
    sampler: str = "nsga2"
    seed: int = 0
    trials: int = 16
    concurrency: int = 1
    cpu: float = 1.0
    gpu: float = 0.0  # fractions let several small proxies share one GPU
    early_stopping: EarlyStopping | None = None
    retries: int = 1  # Ray restarts of a trial whose process died (a raised error is recorded, not retried)
    save_weights: bool = False


@dataclass(frozen=True)
class Study:
    """A validated study. Build with `Study.load(path)`."""

    name: str
    file: str
    space: SearchSpace
    proxy: ProxySettings
    objectives: tuple[Objective, ...]
    constraints: Constraints  # the study's own, checked on top of the space's
    search: SearchSettings
    out: str
    plugins: tuple[str, ...]
    frozen: dict[str, Any]  # the study as data, with the space inlined: what a run directory keeps

    @classmethod
    def load(cls, path: str | Path) -> Study:
        return _load(_yaml.load_file(str(path)), Path(path))

    @property
    def proxy_key(self) -> str:
        """A digest of the proxy settings: results are reused only between equal settings."""
        text = json.dumps(dataclasses.asdict(self.proxy), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def violations(self, arch) -> list[str]:
        """The space's and the study's constraints this architecture breaks."""
        out = self.space.constraint_violations(arch)
        if self.constraints.bounds:
            cost = arch.cost(self.constraints.context, self.constraints.dtype_bytes)
            out += [v for b in self.constraints.bounds if (v := b.violation(getattr(cost, b.metric)))]
        return out


def _load(root: _yaml.Node, path: Path) -> Study:
    f = root.file
    p = _Parser(f)
    if not isinstance(root.value, dict):
        raise SpaceError(f, root.line, "", "expected a study mapping with space, proxy, objectives and search")
    top = root.value
    for key, node in top.items():
        if key not in TOP_KEYS:
            raise SpaceError(f, node.line, key, f"unknown key; expected one of {', '.join(sorted(TOP_KEYS))}")
    for key in ("space", "objectives"):
        if key not in top:
            raise SpaceError(f, root.line, key, "missing")
    name = top["name"].value if "name" in top else path.stem
    plugins = tuple(_plugins(top.get("plugins"), path, f))
    _import_plugins(plugins)  # a plugin's block families must exist before the space is parsed

    space_node = top["space"]
    if isinstance(space_node.value, str):
        space_path = (path.parent / space_node.value).resolve()
        if not space_path.exists():
            raise SpaceError(f, space_node.line, "space", f"no such file {space_path}; expected a search-space YAML path or an inline space")
        space = SearchSpace.load(str(space_path))
        space_data = _yaml.load_file(str(space_path)).plain()
    elif isinstance(space_node.value, dict):
        text = path.read_text()
        space = _parse(space_node, text)
        from .sampling import check_feasible

        check_feasible(space)
        space_data = space_node.plain()
    else:
        raise SpaceError(f, space_node.line, "space", "expected a path to a search space or an inline space mapping")

    proxy = _proxy(top.get("proxy"), f, path.parent)
    objectives = _objectives(top["objectives"], f, proxy)
    constraints = Constraints()
    if "constraints" in top:
        from .sampling import check_feasible

        constraints = p.constraints(top["constraints"])
        check_feasible(space, constraints)
    search = _search(top.get("search"), f, p)
    out = top["out"].value if "out" in top else f"runs/{name}"
    frozen = {k: v.plain() for k, v in top.items() if k not in ("space", "out")}
    frozen.update(name=name, space=space_data, proxy=dataclasses.asdict(proxy), plugins=list(plugins))
    return Study(name, f, space, proxy, objectives, constraints, search, str(out), plugins, frozen)


def _plugins(node: _yaml.Node | None, path: Path, f: str) -> list[str]:
    if node is None:
        return []
    if not isinstance(node.value, list) or not all(isinstance(n.value, str) for n in node.value):
        raise SpaceError(f, node.line, "plugins", "expected a list of Python files or module names that register block families")
    out = []
    for item in node.value:
        if item.value.endswith(".py"):
            full = (path.parent / item.value).resolve()
            if not full.exists():
                raise SpaceError(f, item.line, "plugins", f"no such file {full}")
            out.append(str(full))
        else:
            out.append(item.value)
    return out


def _import_plugins(plugins: tuple[str, ...]) -> None:
    """Import plugin files or modules once per process (their import registers their block families)."""
    import importlib
    import importlib.util
    import sys

    for plugin in plugins:
        module_name = "archsearch_plugin_" + hashlib.sha1(plugin.encode()).hexdigest()[:8] if plugin.endswith(".py") else plugin
        if module_name in sys.modules:
            continue
        if plugin.endswith(".py"):
            spec = importlib.util.spec_from_file_location(module_name, plugin)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(plugin)


_PROXY_FIELDS = {f.name: f for f in dataclasses.fields(ProxySettings)}


def _proxy(node: _yaml.Node | None, f: str, folder: Path) -> ProxySettings:
    if node is None:
        return ProxySettings()
    if not isinstance(node.value, dict):
        raise SpaceError(f, node.line, "proxy", "expected a mapping of proxy settings")
    kwargs: dict[str, Any] = {}
    for key, sub in node.value.items():
        k = f"proxy.{key}"
        if key == "data":
            kwargs["data"] = _dataclass(DataSpec, sub, k, f, scalar_field="source")
        elif key == "synthetic":
            kwargs["synthetic"] = _dataclass(TaskSpec, sub, k, f)
        elif key in _PROXY_FIELDS:
            kwargs[key] = _typed(sub, k, f, _PROXY_FIELDS[key].type)
        else:
            raise SpaceError(f, sub.line, k, f"unknown proxy setting; expected one of {', '.join(_PROXY_FIELDS)}")
    if "synthetic" in kwargs and kwargs["synthetic"] is not None and "task" not in kwargs:
        kwargs["task"] = kwargs["synthetic"].name
    data = kwargs.get("data")
    if data is not None:  # relative paths are relative to the study file, like its space
        resolve = lambda p: p if p is None or p == "builtin" or Path(p).is_absolute() else str((folder / p).resolve())  # noqa: E731
        kwargs["data"] = dataclasses.replace(data, source=resolve(data.source), tokenizer=resolve(data.tokenizer))
    try:
        return ProxySettings(**kwargs)
    except ArchsearchError as e:
        raise SpaceError(f, node.line, "proxy", str(e)) from None


def _dataclass(cls, node: _yaml.Node, key: str, f: str, scalar_field: str | None = None):
    if node.value is None:
        return None
    if scalar_field and not isinstance(node.value, dict):
        return cls(**{scalar_field: _typed(node, key, f, "str")})
    if not isinstance(node.value, dict):
        raise SpaceError(f, node.line, key, f"expected a mapping of {', '.join(x.name for x in dataclasses.fields(cls))}")
    fields = {x.name: x for x in dataclasses.fields(cls)}
    kwargs = {}
    for k, sub in node.value.items():
        if k not in fields:
            raise SpaceError(f, sub.line, f"{key}.{k}", f"unknown setting; expected one of {', '.join(fields)}")
        kwargs[k] = tuple(sub.plain()) if "tuple" in str(fields[k].type) else _typed(sub, f"{key}.{k}", f, fields[k].type)
    return cls(**kwargs)


def _typed(node: _yaml.Node, key: str, f: str, annotation: Any) -> Any:
    """Check a scalar against a dataclass field's annotation (a string under `from __future__ import annotations`)."""
    kind = str(annotation)
    v = node.value
    if v is None and "None" in kind:
        return None
    if kind.startswith("bool"):
        if isinstance(v, bool):
            return v
        raise SpaceError(f, node.line, key, f"expected true or false, got {v!r}")
    if kind.startswith("int"):
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
        raise SpaceError(f, node.line, key, f"expected a non-negative integer, got {v!r}")
    if kind.startswith("float"):
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        raise SpaceError(f, node.line, key, f"expected a number, got {v!r}")
    if isinstance(v, str | int | float) and not isinstance(v, bool):
        return str(v)
    raise SpaceError(f, node.line, key, f"expected a string, got {node.plain()!r}")


def _objectives(node: _yaml.Node, f: str, proxy: ProxySettings) -> tuple[Objective, ...]:
    if not isinstance(node.value, list) or not node.value:
        raise SpaceError(f, node.line, "objectives", "expected a non-empty list like [bits_per_byte: min, train_tokens_per_s: max]")
    out = []
    for i, item in enumerate(node.value):
        key = f"objectives[{i}]"
        if isinstance(item.value, str):
            metric, direction = item.value, None
        elif isinstance(item.value, dict) and len(item.value) == 1:
            metric, dnode = next(iter(item.value.items()))
            direction = dnode.value
            if direction not in DIRECTIONS:
                raise SpaceError(f, item.line, f"{key}.{metric}", f"expected min or max, got {direction!r}")
        else:
            raise SpaceError(f, item.line, key, "expected METRIC or {METRIC: min|max}")
        if metric not in METRICS:
            raise SpaceError(f, item.line, key, f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
        if metric == "accuracy" and proxy.task == "lm":
            raise SpaceError(f, item.line, key, "accuracy needs a synthetic proxy task (proxy.task: mqar, selective_copy or induction)")
        if metric in ("bits_per_byte", "perplexity") and proxy.task != "lm":
            raise SpaceError(f, item.line, key, f"{metric} needs the language-modelling proxy (proxy.task: lm)")
        if metric in ("prefill_tokens_per_s", "decode_tokens_per_s") and not proxy.inference:
            raise SpaceError(f, item.line, key, f"{metric} needs proxy.inference: true")
        if metric == "peak_memory_bytes" and proxy.device == "cpu":
            raise SpaceError(f, item.line, key, "peak memory is measured on CUDA only")
        if metric in (o.metric for o in out):
            raise SpaceError(f, item.line, key, f"{metric} is listed twice")
        out.append(Objective(metric, DIRECTIONS[direction] if direction else METRICS[metric]))
    return tuple(out)


def _search(node: _yaml.Node | None, f: str, p: _Parser) -> SearchSettings:
    if node is None:
        return SearchSettings()
    if not isinstance(node.value, dict):
        raise SpaceError(f, node.line, "search", "expected a mapping of search settings")
    kwargs: dict[str, Any] = {}
    fields = {x.name: x for x in dataclasses.fields(SearchSettings)}
    for key, sub in node.value.items():
        k = f"search.{key}"
        if key not in SEARCH_KEYS:
            raise SpaceError(f, sub.line, k, f"unknown setting; expected one of {', '.join(sorted(SEARCH_KEYS))}")
        if key == "sampler":
            if sub.value not in SAMPLERS:
                raise SpaceError(f, sub.line, k, f"expected one of {', '.join(SAMPLERS)}, got {sub.value!r}")
            kwargs["sampler"] = sub.value
        elif key == "resources":
            if not isinstance(sub.value, dict) or set(sub.value) - {"cpu", "gpu"}:
                raise SpaceError(f, sub.line, k, "expected {cpu: N, gpu: F} (gpu may be a fraction, e.g. 0.25)")
            for r, rnode in sub.value.items():
                kwargs[r] = _typed(rnode, f"{k}.{r}", f, "float")
                if kwargs[r] < 0:
                    raise SpaceError(f, rnode.line, f"{k}.{r}", "expected a non-negative number")
        elif key == "early_stopping":
            if sub.value is False or sub.value is None:
                continue
            if sub.value is True:
                kwargs["early_stopping"] = EarlyStopping()
                continue
            es = _dataclass(EarlyStopping, sub, k, f)
            if not 0 < es.grace <= 1 or es.reduction_factor < 2:
                raise SpaceError(f, sub.line, k, "expected 0 < grace <= 1 and reduction_factor >= 2")
            kwargs["early_stopping"] = es
        else:
            kwargs[key] = _typed(sub, k, f, fields[key].type)
            if key in ("trials", "concurrency") and kwargs[key] < 1:
                raise SpaceError(f, sub.line, k, "expected a positive integer")
    return SearchSettings(**kwargs)


# --- the run directory ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A run directory as `front` and `export` read it."""

    path: Path
    study: Study
    trials: Any  # pandas.DataFrame, one row per finished trial (columns: TABLE_COLUMNS, then p:<parameter>)


TABLE_COLUMNS = [
    "trial", "status", "reason", "summary", "digest", "arch", "params", "active_params", "flops_per_token", "state_bytes",
    "val_loss", "perplexity", "bits_per_byte", "accuracy", "train_tokens_per_s", "prefill_tokens_per_s",
    "decode_tokens_per_s", "peak_memory_bytes", "tokens_trained", "wall_seconds", "cached",
]


def load_run(path: str | Path) -> Run:
    """Read a run directory written by `archsearch run`."""
    import pandas as pd

    path = Path(path)
    study_file = path / "study.yaml"
    if not study_file.exists():
        raise ArchsearchError(f"{path}: not a run directory (no study.yaml); expected the --out folder of archsearch run")
    study = Study.load(study_file)
    table = path / "trials.csv"
    trials = pd.read_csv(table) if table.exists() and table.stat().st_size else pd.DataFrame(columns=TABLE_COLUMNS)
    return Run(path, study, trials)


def freeze(study: Study, run_dir: Path) -> None:
    """Write the study, with its space inlined, into the run directory (the run keeps what it was started with)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "study.yaml").write_text(yaml.safe_dump(study.frozen, sort_keys=False))
    (run_dir / "space.yaml").write_text(yaml.safe_dump(study.frozen["space"], sort_keys=False))
