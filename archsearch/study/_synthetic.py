"""The synthetic side of a study file: `proxy.task` with `proxy.synthetic` (one task and its settings), and the
synthetic suite (`proxy.task: suite`, a list of tasks, or a `suite:` section), read into a `TaskSpec` and a `Suite`.

Task settings are checked by `TaskSpec` itself; its `TaskError`s come back here and leave as one
`FILE:LINE: KEY: ...` line at the setting's node (or the mapping's, for a setting left at its default).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from .. import _yaml
from .._config import fail, read_value
from ..errors import ArchsearchError, ConfigError
from ..proxy import TASKS, ProxySettings, TaskSpec
from ..proxy.suite import DEFAULT_SUITE, SCORE, SUITES, TRAINING, Suite, metric_name, task_settings
from ..proxy.tasks import TaskError

SUITE = "suite"  # proxy.task: suite, the suite is the study's proxy
SYNTHETIC_KEY = "proxy.synthetic"  # where TaskSpec's errors say they are; re-keyed to where the study wrote them
SIZES = tuple(f.name for f in dataclasses.fields(TaskSpec) if f.name != "name")
TASK_METRICS = {metric_name(t): t for t in TASKS}


def read_task(node: _yaml.Node, key: str) -> str | tuple[str, ...]:
    """proxy.task: lm, one synthetic task, suite, or a list of tasks (the suite of those tasks)."""
    choices = f"lm, {SUITE}, a list of tasks, or one of {', '.join(TASKS)}"
    if isinstance(node.value, list):
        if not node.value:
            raise fail(node, key, f"expected at least one task of {', '.join(TASKS)}")
        names = []
        for i, item in enumerate(node.value):
            if not isinstance(item.value, str) or item.value not in TASKS:
                raise fail(item, f"{key}[{i}]", f"unknown task {item.plain()!r}; expected one of {', '.join(TASKS)}")
            if item.value in names:
                raise fail(item, f"{key}[{i}]", f"{item.value} listed twice; each task gives one metric")
            names.append(item.value)
        return tuple(names)
    name = read_value(str, node, key)
    if name not in ("lm", SUITE, *TASKS):
        raise fail(node, key, f"unknown proxy task {name!r}; expected {choices}")
    return name


def read_synthetic(task: str, node: _yaml.Node | None, proxy: _yaml.Node) -> TaskSpec:
    """The TaskSpec of a single synthetic proxy task: `proxy.task` names it, `proxy.synthetic` (optional) holds its
    settings. Its seq_len is proxy.seq_len unless synthetic sets its own; both set and different is an error."""
    sizes: dict[str, Any] = {}
    if node is not None and node.value is not None:
        sizes = _read_settings(node, SYNTHETIC_KEY, ("name", *SIZES))
        name = sizes.pop("name", None)
        if name is not None and name != task:
            raise fail(node.value["name"], f"{SYNTHETIC_KEY}.name",
                       f"{name!r}, but proxy.task is {task}: the task is named once, by proxy.task (synthetic: holds its settings)")
    given = proxy.value.get("seq_len")
    if "seq_len" in sizes and given is not None and given.value != sizes["seq_len"]:
        raise fail(node.value["seq_len"], f"{SYNTHETIC_KEY}.seq_len",
                   f"{sizes['seq_len']}, but proxy.seq_len is {given.value}: give the task's length in one place")
    if "seq_len" not in sizes:
        sizes["seq_len"] = given.value if given is not None else ProxySettings.seq_len
    return _spec(task, sizes, node if node is not None and node.value is not None else proxy, SYNTHETIC_KEY)


def refuse_synthetic(task: str | tuple[str, ...], node: _yaml.Node) -> ConfigError:
    """proxy.synthetic where proxy.task is lm or a suite."""
    if task == "lm":
        named = node.value.get("name") if isinstance(node.value, dict) else None
        hint = f"write proxy.task: {named.value}" if named is not None and named.value in TASKS else "name the task in proxy.task"
        return fail(node, SYNTHETIC_KEY, f"sets a synthetic task's settings, but proxy.task is lm: {hint}, or use the suite "
                                         "beside language modelling (suite.tasks, objectives such as mqar_accuracy)")
    return fail(node, SYNTHETIC_KEY, "sets one synthetic task's settings (proxy.task: TASK); a suite's tasks take theirs under suite.tasks.TASK")


def objective_names(node: _yaml.Node) -> list[str]:
    """The metric names the objectives list, as far as they can be read (their errors are the objectives' reader's)."""
    items = node.value if isinstance(node.value, list) else []
    names = [i.value if isinstance(i.value, str) else next(iter(i.value)) if isinstance(i.value, dict) and i.value else None for i in items]
    return [n for n in names if isinstance(n, str)]


def read_suite(node: _yaml.Node | None, base: ProxySettings, listed: str | tuple[str, ...] | None,
               objectives: list[str]) -> Suite | None:
    """The synthetic suite a study runs, or None. It runs when proxy.task is suite or a list (`listed`), when the
    study has a `suite:` section, or when an objective is one of its metrics. Its tasks: the list in proxy.task or
    suite.tasks; else all of them with proxy.task: suite or a suite_score objective; else those the objectives
    name. Each task trains with `base`'s settings, then suite:'s, then its own, at its own sizes."""
    named = [TASK_METRICS[n] for n in objectives if n in TASK_METRICS]
    if node is None and listed is None and not named and SCORE not in objectives:
        return None
    overrides, lrs, tasks_node = {}, (), None
    if node is not None:
        if not isinstance(node.value, dict):
            raise fail(node, "suite", f"expected a mapping of tasks, lrs and training settings ({', '.join(TRAINING)})")
        for name, sub in node.value.items():
            if name == "tasks":
                tasks_node = sub
            elif name == "lrs":
                lrs = _read_lrs(sub)
            elif name in TRAINING:
                overrides[name] = read_value(typing.get_type_hints(ProxySettings)[name], sub, f"suite.{name}")
            elif name == "seq_len":
                raise fail(sub, "suite.seq_len", "each task trains at its own sizes: set suite.tasks.TASK.seq_len")
            else:
                raise fail(sub, f"suite.{name}", f"unknown suite setting; expected one of tasks, lrs, {', '.join(TRAINING)}")
        if lrs and "lr" in overrides:
            raise fail(node.value["lr"], "suite.lr", "suite.lrs sets every task's learning rate; drop one of them")
    if tasks_node is not None and isinstance(listed, tuple):
        raise fail(tasks_node, "suite.tasks", "proxy.task lists the suite's tasks already; list them in one place")
    settings = _settings(base, overrides, node, "suite")
    if tasks_node is not None:
        return Suite(_read_tasks(tasks_node, settings, bool(lrs)), lrs)
    if isinstance(listed, tuple):
        tasks = listed
    elif listed == SUITE or SCORE in objectives or not named:
        tasks = SUITES[DEFAULT_SUITE]
    else:
        tasks = tuple(named)
    return Suite(tuple(task_settings(settings, TaskSpec(t)) for t in tasks), lrs)


def _read_tasks(node: _yaml.Node, settings: ProxySettings, swept: bool) -> tuple[ProxySettings, ...]:
    """suite.tasks: a suite name, a list of task names, or a mapping of task names to their settings (sizes, and
    training settings of their own)."""
    key = "suite.tasks"
    if isinstance(node.value, str):
        if node.value not in SUITES:
            raise fail(node, key, f"unknown suite {node.value!r}; expected one of {', '.join(SUITES)}, a list of tasks, or a mapping of tasks to their settings")
        return tuple(task_settings(settings, TaskSpec(t)) for t in SUITES[node.value])
    if isinstance(node.value, list):
        return tuple(task_settings(settings, TaskSpec(t)) for t in read_task(node, key))
    if not isinstance(node.value, dict) or not node.value:
        raise fail(node, key, f"expected {', '.join(SUITES)}, a list of tasks, or a mapping of tasks to their settings")
    runs = []
    for task, sub in node.value.items():
        k = f"{key}.{task}"
        if task not in TASKS:
            raise fail(sub, k, f"unknown task; expected one of {', '.join(TASKS)}")
        given = _read_settings(sub, k, (*SIZES, *TRAINING)) if sub.value is not None else {}
        if swept and "lr" in given:
            raise fail(sub.value["lr"], f"{k}.lr", "suite.lrs sets every task's learning rate; drop one of them")
        own = _settings(settings, {n: v for n, v in given.items() if n in TRAINING}, sub, k)
        runs.append(task_settings(own, _spec(task, {n: v for n, v in given.items() if n in SIZES}, sub, k)))
    return tuple(runs)


def _read_settings(node: _yaml.Node, key: str, names: tuple[str, ...]) -> dict[str, Any]:
    """A mapping of task settings (TaskSpec's fields) and training settings (ProxySettings'), each by its type."""
    if not isinstance(node.value, dict):
        raise fail(node, key, f"expected a mapping of {', '.join(names)}")
    hints = {**typing.get_type_hints(ProxySettings), **typing.get_type_hints(TaskSpec)}
    out = {}
    for name, sub in node.value.items():
        if name not in names:
            raise fail(sub, f"{key}.{name}", f"unknown setting; expected one of {', '.join(names)}")
        out[name] = read_value(hints[name], sub, f"{key}.{name}")
    return out


def _spec(task: str, sizes: dict[str, Any], node: _yaml.Node, key: str) -> TaskSpec:
    """TaskSpec(task, **sizes); its TaskError as one line at the setting (or at `node` for a default)."""
    try:
        return TaskSpec(task, **sizes)
    except TaskError as e:
        setting = e.key.removeprefix(SYNTHETIC_KEY + ".")
        sub = node.value.get(setting) if isinstance(node.value, dict) else None
        raise fail(sub or node, f"{key}.{setting}", e.message) from None


def _settings(base: ProxySettings, overrides: dict[str, Any], node: _yaml.Node | None, key: str) -> ProxySettings:
    """`base` with `overrides`; ProxySettings' own checks as one line at the setting."""
    try:
        return dataclasses.replace(base, **overrides)
    except ArchsearchError as e:
        name, sep, rest = str(e).partition(": ")
        sub = node.value.get(name) if node is not None and isinstance(node.value, dict) else None
        raise fail(sub or node, f"{key}.{name}" if sep else key, rest if sep else str(e)) from None


def _read_lrs(node: _yaml.Node) -> tuple[float, ...]:
    if not isinstance(node.value, list) or not node.value:
        raise fail(node, "suite.lrs", "expected a non-empty list of learning rates, e.g. [0.001, 0.003]")
    lrs = tuple(read_value(float, item, f"suite.lrs[{i}]") for i, item in enumerate(node.value))
    for i, (lr, item) in enumerate(zip(lrs, node.value, strict=True)):
        if not lr > 0:
            raise fail(item, f"suite.lrs[{i}]", f"expected a number above 0, got {lr:g}")
    return lrs
