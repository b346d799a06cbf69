"""Study files: a search space, proxy settings, objectives, constraints and search settings -> a validated `Study`.

Every section is read by the typed reader (`archsearch._config`) against the dataclasses that define it, so a
setting's type and default are written once. The space is parsed once and probed for feasibility once, against
its own constraints and the study's together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import _yaml
from .._config import fail, positive_int, read_dataclass, read_fields, read_file, read_value
from ..errors import ArchsearchError, ConfigError
from ..loading import check_feasible, read_space_text
from ..metrics import DIRECTIONS, METRICS, OBJECTIVES
from ..proxy import DataSpec, ProxySettings
from ..proxy.suite import Suite, metric_name
from ..proxy.train import LM_TASK
from ..space import Constraints, SearchSpace, parse_constraints, parse_quantity, parse_space
from ._baselines import Baseline, read_baselines
from ._samplers import GRID, SAMPLERS, check_option
from ._synthetic import SUITE, objective_names, read_suite, read_synthetic, read_task, refuse_synthetic

TOP_KEYS = {"name", "description", "space", "proxy", "fidelity", "suite", "objectives", "constraints", "search", "baselines", "out", "plugins"}


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # minimize or maximize


@dataclass(frozen=True)
class Fidelity:
    """A ladder of token budgets, ascending, the last the proxy's own: at each lower rung a trial goes on only if it
    is among the best `keep` share of the trials that reached that rung, ranked on all the study's objectives
    (MO-ASHA: non-dominated sorting, then crowding distance; see `archsearch.fidelity.promote`)."""

    rungs: tuple[int, ...]
    keep: float = 0.33

    @property
    def top(self) -> int:
        """The top rung's index: the rung of a trial that trained the whole budget."""
        return len(self.rungs) - 1

    @property
    def lower(self) -> tuple[int, ...]:
        """The rungs below the budget (what the proxy evaluates and reports on the way)."""
        return self.rungs[:-1]

    def stopped(self, row: dict[str, Any]) -> bool:
        """Whether a trial's row is of a rung below the top: the ladder stopped it there, at a smaller budget."""
        return isinstance(row.get("rung"), int) and row["rung"] < self.top


MAX_RUNGS = 8
MAX_TOKENS = 1 << 50  # ProxySettings' own bound on a token budget
# what the proxy's rung points carry besides the cost model's figures: its evaluation at the rung, and the training
# rate timed in the first rung. Prefill, decode, peak memory, the extrapolation and the suite are measured at the
# end of a run only, so a ladder cannot rank on them
RUNG_METRICS = ("val_loss", "perplexity", "bits_per_byte", "accuracy", "train_tokens_per_s")


# where a study can log its trials' results besides the run directory, and the package the Ray Tune logger of each
# needs (see study._optuna_ray.TRACKERS)
TRACKING_PACKAGES = {"tensorboard": "tensorboardX", "wandb": "wandb"}
Tracker = Literal[tuple(TRACKING_PACKAGES)]


@dataclass(frozen=True)
class SearchSettings:
    sampler: str = "nsga2"  # a name in study._samplers.SAMPLERS
    seed: int = 0
    trials: int = 16
    concurrency: int = 1
    cpu: float = 1.0
    gpu: float = 0.0  # fractions let several small proxies share one GPU
    retries: int = 1  # Ray restarts of a trial whose process died (a raised error is recorded, not retried)
    save_weights: bool = False
    count_infeasible: bool = False  # false: an infeasible draw is redrawn and does not use up a trial
    max_draws: int = 100  # draws per trial before a study stops with one line: nearly all infeasible, or all measured
    repeats: int = 1  # seeds per architecture (proxy.seed, +1, ...): its objectives are their means
    remeasure: bool = False  # true: a re-drawn architecture is a new trial, trained again with new seeds
    tracking: tuple[Tracker, ...] = ()  # loggers of every trial's reports: tensorboard (RUN/tensorboard), wandb
    # whether a worker runs trial after trial, keeping imports, corpus, compiled kernels and CUDA context (false: a
    # fresh worker per trial)
    warm_workers: bool = True
    # the chosen sampler's constructor keywords, written `search: {SAMPLER: {KEY: VALUE}}` (see study._samplers)
    sampler_settings: tuple[tuple[str, Any], ...] = ()

    @property
    def counts_infeasible(self) -> bool:
        """Whether an infeasible draw uses up a trial: when the study says so, and always on the grid (whose trials
        are its points, infeasible ones included)."""
        return self.count_infeasible or self.sampler == GRID


@dataclass(frozen=True)
class Study:
    """A validated study. Build with `Study.load(path)`."""

    name: str
    file: str
    space: SearchSpace
    proxy: ProxySettings
    objectives: tuple[Objective, ...]
    constraints: Constraints  # the space's and the study's together: what a trial must meet before it trains
    search: SearchSettings
    out: str
    plugins: tuple[str, ...]
    frozen: dict[str, Any]  # the study as data, with the space inlined: what a run directory keeps
    baselines: tuple[Baseline, ...] = ()  # architectures enqueued before the sampler's own trials
    suite: Suite | None = None  # the synthetic suite each trial runs too (or alone: suite_only)
    suite_only: bool = False  # proxy.task: suite: the suite is the study's proxy, and `proxy` its first task's run
    fidelity: Fidelity | None = None  # the multi-fidelity ladder, when the study has one

    @classmethod
    def load(cls, path: str | Path, plugins: bool = True) -> Study:
        """Read and check a study; `plugins=False` leaves its plugins unimported (reading someone else's run must
        not run their code), so a space that uses a plugin's block family is then refused."""
        return _load(read_file(str(path)), Path(path), plugins)

    @property
    def proxy_key(self) -> str:
        """A digest of the proxy settings: results are reused only between equal settings."""
        data = self.proxy.key_data()
        if self.suite is not None:
            data = {"proxy": data, "suite": self.suite.to_data(), "suite_only": self.suite_only}
        text = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def trainings(self) -> tuple[tuple[str, ProxySettings], ...]:
        """Every training a trial runs, each with the key a study file sets it under: the proxy (unless the suite
        is the proxy), then each suite task."""
        proxy = () if self.suite_only else (("proxy", self.proxy),)
        return proxy + tuple((f"suite.tasks.{r.task}", r) for r in (self.suite.runs if self.suite else ()))

    def violations(self, arch) -> list[str]:
        """The space's and the study's constraints this architecture breaks."""
        return self.constraints.violations(arch)


def _load(root: _yaml.Node, path: Path, trust_plugins: bool = True) -> Study:
    if not isinstance(root.value, dict):
        raise fail(root, "", "expected a study mapping with space, proxy, objectives and search")
    top = root.value
    for key, node in top.items():
        if key not in TOP_KEYS:
            raise fail(node, key, f"unknown key; expected one of {', '.join(sorted(TOP_KEYS))}")
    for key in ("space", "objectives"):
        if key not in top:
            raise fail(root, key, "missing")
    name = read_value(str, top["name"], "name") if "name" in top else path.stem
    plugins = _plugins(top["plugins"], path) if "plugins" in top else ()
    if trust_plugins:  # a plugin's block families must exist before the space is parsed
        for plugin, node in zip(plugins, top["plugins"].value if plugins else (), strict=True):
            _import_plugin(plugin, node)

    space, space_data = _space(top["space"], path)
    proxy, listed = _proxy(top["proxy"], path.parent) if "proxy" in top else (ProxySettings(), None)
    suite = read_suite(top.get("suite"), proxy, listed, objective_names(top["objectives"]))
    suite_only = listed is not None
    if suite_only:  # the row's proxy figures (validation loss, throughput) are the suite's first run's
        proxy = suite.runs[0]
    fidelity = _fidelity(top["fidelity"], top.get("proxy"), proxy, suite_only) if "fidelity" in top else None
    if fidelity:
        proxy = dataclasses.replace(proxy, tokens=fidelity.rungs[-1])  # the top rung is the proxy's budget
    objectives = _objectives(top["objectives"], proxy, suite, suite_only)
    if fidelity:
        _check_ladder_objectives(top["objectives"], objectives)
    constraints = space.constraints
    if "constraints" in top:
        constraints = constraints.joined(parse_constraints(top["constraints"], ConfigError))
    check_feasible(space, constraints)
    search = _search(top["search"]) if "search" in top else SearchSettings()
    _check_repeats(top, search)
    if suite_only and "search" in top:
        _check_suite_search(top["search"], search)
    baselines = read_baselines(top["baselines"], path.parent, space, constraints) if "baselines" in top else ()
    out = read_value(str, top["out"], "out") if "out" in top else f"runs/{name}"
    frozen = {k: v.plain() for k, v in top.items() if k not in ("space", "out", "baselines")}
    frozen.update(name=name, space=space_data, proxy=dataclasses.asdict(proxy), plugins=list(plugins))
    if suite is not None:  # resolved, like the proxy: reads back to the same runs
        frozen["suite"] = suite.to_data()
    if suite_only:
        frozen["proxy"] = {**{k: v for k, v in frozen["proxy"].items() if k not in ("synthetic", "seq_len")}, "task": SUITE}
    if baselines:  # inlined, like the space: a resumed run needs no baseline files
        frozen["baselines"] = [{"name": b.name, "arch": b.arch.to_dict()} for b in baselines]
    return Study(name, root.file, space, proxy, objectives, constraints, search, out, plugins, frozen, baselines, suite, suite_only, fidelity)


def _space(node: _yaml.Node, path: Path) -> tuple[SearchSpace, dict[str, Any]]:
    """The space (a path relative to the study, or inline), parsed once, and its data for the frozen study."""
    if isinstance(node.value, str):
        space_path = (path.parent / node.value).resolve()
        if not space_path.exists():
            raise fail(node, "space", f"no such file {space_path}; expected a search-space YAML path or an inline space")
        text = read_space_text(str(space_path))
        root = _yaml.load(text, str(space_path))
        return parse_space(root, text), root.plain()
    if isinstance(node.value, dict):
        return parse_space(node, path.read_text()), node.plain()
    raise fail(node, "space", "expected a path to a search space or an inline space mapping")


def _import_plugin(plugin: str, node: _yaml.Node) -> None:
    """Import one plugin; what its code raises is one line, naming the file and line where Python says."""
    try:
        import_plugins((plugin,))
    except SyntaxError as e:
        raise ConfigError(str(e.filename), e.lineno, "plugin", f"{e.msg} (listed at {node.file}:{node.line})") from None
    except Exception as e:  # a plugin is someone's code: whatever it raises, the study cannot load
        sys.modules.pop("archsearch_plugin_" + hashlib.sha1(plugin.encode()).hexdigest()[:8], None)
        raise fail(node, "plugins", f"cannot import {plugin} ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None


def _plugins(node: _yaml.Node, path: Path) -> tuple[str, ...]:
    if not isinstance(node.value, list) or not all(isinstance(n.value, str) for n in node.value):
        raise fail(node, "plugins", "expected a list of Python files or module names that register block families")
    out = []
    for item in node.value:
        if item.value.endswith(".py"):
            full = (path.parent / item.value).resolve()
            if not full.exists():
                raise fail(item, "plugins", f"no such file {full}")
            out.append(str(full))
        else:
            out.append(item.value)
    return tuple(out)


def import_plugins(plugins: tuple[str, ...]) -> None:
    """Import plugin files or modules once per process (their import registers their block families)."""
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


def _proxy(node: _yaml.Node, folder: Path) -> tuple[ProxySettings, str | tuple[str, ...] | None]:
    """The proxy settings, and the suite's tasks when proxy.task is `suite` or a list of tasks (else None): then
    the settings are the suite's training settings, with no task of their own."""
    def data(sub: _yaml.Node, key: str) -> DataSpec:
        try:
            if isinstance(sub.value, dict):
                return read_dataclass(DataSpec, sub, key)
            return DataSpec(source=read_value(str, sub, key))  # `data: PATH` is short for {source: PATH}
        except ConfigError:
            raise
        except ArchsearchError as e:  # DataSpec's own checks
            raise _setting_error(sub, key, str(e)) from None

    if not isinstance(node.value, dict):
        raise fail(node, "proxy", "expected a mapping of proxy settings")
    kwargs = read_fields(ProxySettings, node, "proxy", noun="proxy setting",
                         parsers={"data": data, "task": read_task, "synthetic": lambda sub, key: None if sub.value is None else sub,
                                  **dict.fromkeys(("tokens", "eval_tokens", "warmup_tokens", "decode_tokens"), token_count),
                                  "predict_tokens": lambda sub, key: None if sub.value is None else token_count(sub, key)})
    task, synthetic, listed = kwargs.pop("task", "lm"), kwargs.pop("synthetic", None), None
    if synthetic is not None and (task == "lm" or task == SUITE or isinstance(task, tuple)):
        raise refuse_synthetic(task, synthetic)
    if task == SUITE or isinstance(task, tuple):
        if "seq_len" in kwargs:
            raise fail(node.value["seq_len"], "proxy.seq_len", "the suite's tasks train at their own sizes: set suite.tasks.TASK.seq_len")
        listed = task
    elif task != "lm":
        spec = read_synthetic(task, synthetic, node)
        kwargs.update(task=task, synthetic=spec, seq_len=spec.seq_len)
    if "data" in kwargs:  # relative paths are relative to the study file, like its space
        resolve = lambda p: p if p is None or p == "builtin" or Path(p).is_absolute() else str((folder / p).resolve())  # noqa: E731
        kwargs["data"] = dataclasses.replace(kwargs["data"], source=resolve(kwargs["data"].source), tokenizer=resolve(kwargs["data"].tokenizer))
        unreadable = kwargs["data"].unreadable()
        if unreadable:
            raise _setting_error(node.value["data"], "proxy.data", unreadable)
    try:
        return ProxySettings(**kwargs), listed
    except ArchsearchError as e:
        raise _setting_error(node, "proxy", str(e)) from None


def _setting_error(node: _yaml.Node, key: str, message: str) -> ConfigError:
    """`NAME: what` from a settings class, placed at NAME's line where the mapping has it."""
    name, sep, rest = message.partition(": ")
    sub = node.value.get(name) if isinstance(node.value, dict) else None
    if sep and sub is not None:
        return fail(sub, f"{key}.{name}", rest)
    return fail(node, key, message)


def _objectives(node: _yaml.Node, proxy: ProxySettings, suite: Suite | None = None, suite_only: bool = False) -> tuple[Objective, ...]:
    if not isinstance(node.value, list) or not node.value:
        raise fail(node, "objectives", "expected a non-empty list like [bits_per_byte: min, train_tokens_per_s: max]")
    out: list[Objective] = []
    for i, item in enumerate(node.value):
        key = f"objectives[{i}]"
        if isinstance(item.value, str):
            name, direction = item.value, None
        elif isinstance(item.value, dict) and len(item.value) == 1:
            name, dnode = next(iter(item.value.items()))
            direction = dnode.value
            if not isinstance(direction, str) or direction not in DIRECTIONS:
                raise fail(item, f"{key}.{name}", f"expected min or max, got {dnode.plain()!r}")
        else:
            raise fail(item, key, "expected METRIC or {METRIC: min|max}")
        if name not in OBJECTIVES:
            raise fail(item, key, f"unknown metric {name!r}; expected one of {', '.join(OBJECTIVES)}")
        problem = _objective_problem(name, proxy, suite, suite_only)
        if problem:
            raise fail(item, key, problem)
        if name in (o.metric for o in out):
            raise fail(item, key, f"{name} is listed twice")
        out.append(Objective(name, DIRECTIONS[direction] if direction else METRICS[name].direction))
    return tuple(out)


def _objective_problem(name: str, proxy: ProxySettings, suite: Suite | None, suite_only: bool) -> str | None:
    """Why the proxies this study trains cannot measure the metric `name`: a suite metric asks the suite, the others
    the proxy; with a hint where a synthetic task and language modelling are mixed up."""
    m = METRICS[name]
    if m.source == "suite" and not suite_only and name == metric_name(proxy.task):
        return f"{name} would train {proxy.task} a second time, in the suite: the proxy's own task reports it as accuracy"
    if m.source == "suite":
        return m.problem(suite)
    if suite_only and name == "accuracy":
        return "accuracy is a single task's (proxy.task: TASK); a suite reports each task's as TASK_accuracy, and suite_score"
    problem = m.problem(proxy)
    if problem and m.requires is LM_TASK:
        return f"{problem}; to measure {proxy.task} beside language modelling, keep proxy.task: lm and add the objective {metric_name(proxy.task)}"
    if problem and name == "accuracy":
        return f"{problem}; beside language modelling, a synthetic task is an objective of its own: {metric_name('mqar')} and the like"
    return problem


def _check_suite_search(node: _yaml.Node, search: SearchSettings) -> None:
    """What a study whose proxy is the suite cannot do: its trials train one model per task."""
    if search.save_weights:
        raise fail(node.value["save_weights"], "search.save_weights", "keeps the proxy's weights; with proxy.task: suite each "
                   "trial trains one model per task, and none is kept")


def _search(node: _yaml.Node) -> SearchSettings:
    def sampler(sub: _yaml.Node, key: str) -> str:
        if sub.value not in SAMPLERS:
            raise fail(sub, key, f"expected one of {', '.join(SAMPLERS)}, got {sub.value!r}")
        return sub.value

    def resources(sub: _yaml.Node, key: str) -> dict[str, float]:
        if not isinstance(sub.value, dict) or set(sub.value) - {"cpu", "gpu"}:
            raise fail(sub, key, "expected {cpu: N, gpu: F} (gpu may be a fraction, e.g. 0.25)")
        out = {r: read_value(float, rnode, f"{key}.{r}") for r, rnode in sub.value.items()}
        for r, rnode in sub.value.items():
            if out[r] < 0:
                raise fail(rnode, f"{key}.{r}", "expected a non-negative number")
        return out

    def settings(sub: _yaml.Node, key: str) -> dict[str, Any]:
        if not isinstance(sub.value, dict):
            raise fail(sub, key, "expected a mapping of the sampler's constructor keywords")
        return {name: (item, item.plain()) for name, item in sub.value.items()}

    def not_here(sub: _yaml.Node, key: str) -> None:
        raise fail(sub, key, "write a sampler's settings under its name, e.g. search: {nsga2: {population_size: 16}}")

    if not isinstance(node.value, dict):
        raise fail(node, "search", "expected a mapping of search settings")
    if "early_stopping" in node.value:  # ASHA on the validation loss alone gave way to the ladder on all objectives
        raise fail(node.value["early_stopping"], "search.early_stopping",
                   "replaced by the fidelity ladder, which promotes on all objectives: use fidelity: {rungs: [1M, 4M, 16M], keep: 0.33} at the top of the study")
    parsers = {"sampler": sampler, "resources": resources,
               "trials": positive_int, "concurrency": positive_int, "max_draws": positive_int, "repeats": _repeats,
               "sampler_settings": not_here, **dict.fromkeys(SAMPLERS, settings)}
    kwargs = read_fields(SearchSettings, node, "search", parsers=parsers)
    kwargs.update(kwargs.pop("resources", {}))
    chosen = kwargs.get("sampler", SearchSettings.sampler)
    trials = kwargs.get("trials", SearchSettings.trials)
    for name in SAMPLERS:
        if name not in kwargs:
            continue
        given = kwargs.pop(name)
        if name != chosen:
            raise fail(node.value[name], f"search.{name}", f"settings for {name}, but search.sampler is {chosen}")
        for key, (item, value) in given.items():
            problem = check_option(name, key, value, trials)
            if problem:
                raise fail(item, f"search.{name}.{key}", problem)
        kwargs["sampler_settings"] = tuple((key, value) for key, (_, value) in given.items())
    return SearchSettings(**kwargs)


MAX_REPEATS = 16


def _repeats(node: _yaml.Node, key: str) -> int:
    v = node.value
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_REPEATS:
        raise fail(node, key, f"expected a number of seeds from 1 to {MAX_REPEATS}, got {v!r}")
    return v


def _check_repeats(top: dict[str, _yaml.Node], search: SearchSettings) -> None:
    """Repeats that the rest of the study cannot combine with, in one line."""
    if search.repeats > 1 and "fidelity" in top:
        raise fail(top["search"].value["repeats"], "search.repeats", "repeats above 1 with a fidelity ladder are not supported yet; "
                   "expected search.repeats: 1 or no fidelity section")


def _fidelity(node: _yaml.Node, proxy_node: _yaml.Node | None, proxy: ProxySettings, suite_only: bool) -> Fidelity:
    """The ladder: 2 to MAX_RUNGS token counts (1M, 4M or plain numbers), each at least a training step past the
    one before; its top rung is the proxy's budget, so a proxy.tokens that says otherwise is refused."""
    if suite_only:
        raise fail(node, "fidelity", "a ladder promotes one proxy's run at its rungs; with proxy.task: suite each trial trains "
                                     "one model per task (keep proxy.task: lm for a ladder)")
    def rungs(sub: _yaml.Node, key: str) -> tuple[int, ...]:
        if not isinstance(sub.value, list) or not 2 <= len(sub.value) <= MAX_RUNGS:
            raise fail(sub, key, f"expected a list of 2 to {MAX_RUNGS} ascending token counts, e.g. [1M, 4M, 16M]")
        step = proxy.batch_size * (proxy.seq_len if proxy.task == "lm" else proxy.task_spec().seq_len)
        out: list[int] = []
        for i, item in enumerate(sub.value):
            tokens = token_count(item, f"{key}[{i}]")
            if tokens < step or (out and tokens // step <= out[-1] // step):
                raise fail(item, f"{key}[{i}]", f"expected a budget at least one training step ({step:,} tokens: batch_size x seq_len) "
                                                f"above {f'the rung before ({out[-1]:,})' if out else 'zero'}, got {tokens:,}")
            out.append(tokens)
        return tuple(out)

    def keep(sub: _yaml.Node, key: str) -> float:
        value = read_value(float, sub, key)
        if not 0 < value < 1:
            raise fail(sub, key, f"expected the share of each rung's trials that go on, between 0 and 1 (e.g. 0.33), got {value:g}")
        return value

    ladder = read_dataclass(Fidelity, node, "fidelity", parsers={"rungs": rungs, "keep": keep})
    given = proxy_node.value.get("tokens") if proxy_node is not None and isinstance(proxy_node.value, dict) else None
    if given is not None and proxy.tokens != ladder.rungs[-1]:
        raise fail(node.value["rungs"], "fidelity.rungs", f"the top rung ({ladder.rungs[-1]:,}) is the proxy's budget, but proxy.tokens "
                                                          f"says {proxy.tokens:,} (line {given.line}); drop proxy.tokens or make them equal")
    return ladder


def token_count(node: _yaml.Node, key: str) -> int:
    """A whole number of tokens: 1000000, 1M, 1.5M, 64K (what the proxy's token counts and the ladder's rungs take)."""
    tokens = parse_quantity(node.value)
    if tokens is None or tokens != int(tokens) or not 0 <= tokens <= MAX_TOKENS:
        raise fail(node, key, f"expected a whole number of tokens like 1000000, 1M or 64K (at most {MAX_TOKENS:,}), got {node.plain()!r}")
    return int(tokens)


def _check_ladder_objectives(node: _yaml.Node, objectives: tuple[Objective, ...]) -> None:
    """Every objective must be measured at every rung, or no trial could be promoted on it."""
    for i, o in enumerate(objectives):
        if o.metric not in RUNG_METRICS and METRICS[o.metric].source != "cost":
            raise fail(node.value[i], f"objectives[{i}]", f"{o.metric} is not measured at the fidelity ladder's rungs (only at the end of a "
                                                         f"run), so no trial could be promoted on it; expected {', '.join(RUNG_METRICS)} or a cost metric")
