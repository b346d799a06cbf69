"""`archsearch train`: one proxy run with a progress bar, then its metrics.

The proxy flags are made from `ProxySettings`' fields (and `DataSpec`'s, `--data` being its source): their types,
defaults and help texts are declared once, there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .._config import literal_choices
from ..architecture import Architecture
from ..errors import ArchsearchError, ConfigError
from ..loading import load_space
from ..metrics import PROXY_METRICS, human
from ..proxy import DataSpec, ProxySettings, load_corpus, run_proxy
from ..proxy.data import MIN_TOKENS
from ..proxy.tasks import TaskError
from ..sampling import sample

DATA_SOURCE_FLAG = "data"  # DataSpec.source is --data: "the data" is what a user names


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train one architecture as a proxy and print perplexity and tokens/s")
    t.add_argument("arch", help="architecture YAML (normal form), or a search space with --sample SEED")
    t.add_argument("--sample", type=int, metavar="SEED", help="treat ARCH as a search space and train the architecture this seed draws")
    for f, hint in _flags(ProxySettings):
        _add_flag(t, f.name, f, hint, "proxy")
    for f, hint in _flags(DataSpec):
        _add_flag(t, DATA_SOURCE_FLAG if f.name == "source" else f.name, f, hint, "data")
    t.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")


def _flags(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """The fields of `cls` that a flag can set: scalars (bool, int, float, str, or one of them | None), and
    bool | Literal[...] choices."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if literal_choices(hint):  # true, false or one of the named choices (compile: auto)
            out.append((f, hint))
            continue
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = options[0] if len(options) == 1 else None
        if hint in (bool, int, float, str):
            out.append((f, hint))
    return out


def _add_flag(parser: argparse.ArgumentParser, name: str, f: dataclasses.Field, hint: type, group: str) -> None:
    flag = "--" + name.replace("_", "-")
    text = f.metadata.get("help", "")
    dest = f"{group}.{f.name}"
    if choices := literal_choices(hint):
        switch = {"true": True, "false": False} if bool in typing.get_args(hint) else {}  # compile: true; schedule: no
        words = {**switch, **{str(c): c for c in choices}}
        bare = {"nargs": "?", "const": True} if switch else {}  # a bare --compile means true
        parser.add_argument(flag, dest=dest, **bare, default=f.default, type=lambda w: words.get(w.lower(), w),
                            choices=list(words.values()), metavar="|".join(words), help=f"{text} (default {f.default})")
    elif hint is bool:
        action = "store_true" if f.default is False else argparse.BooleanOptionalAction
        parser.add_argument(flag, dest=dest, action=action, default=f.default, help=text)
    else:
        default = f.default
        shown = f" (default {default})" if default is not None else ""
        parser.add_argument(flag, dest=dest, type=hint, default=default, metavar=name.upper(), help=text + shown)


def settings_from(args: argparse.Namespace) -> ProxySettings:
    """The ProxySettings the flags say; a value out of range is one line naming its flag."""
    values = vars(args)
    data = {f.name: values[f"data.{f.name}"] for f, _ in _flags(DataSpec)}
    proxy = {f.name: values[f"proxy.{f.name}"] for f, _ in _flags(ProxySettings)}
    try:
        spec = DataSpec(**data)
        problem = spec.unreadable()
        if problem:
            raise ArchsearchError(problem)
        settings = ProxySettings(**proxy, data=spec)
    except ArchsearchError as e:
        name, sep, rest = str(e).partition(": ")
        if not (sep and (f"data.{name}" in values or f"proxy.{name}" in values)):
            raise
        flag = DATA_SOURCE_FLAG if name == "source" else name
        raise ArchsearchError(f"--{flag.replace('_', '-')}: {rest}") from None
    if settings.task != "lm":  # the task's sizes follow --seq-len: one that cannot hold them is refused before training
        try:
            settings.task_spec()
        except TaskError as e:
            setting = e.key.rpartition(".")[2]
            raise ArchsearchError(f"--task {settings.task} --seq-len {settings.seq_len}: {setting}: {e.message}") from None
    return settings


def _check_output(path: str | None) -> None:
    """--json must be writable before the training, not after it."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ArchsearchError(f"--json {path}: is a directory; expected a file to write")
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ArchsearchError(f"--json {path}: cannot write there ({folder} is not a writable folder)")


def run(args: argparse.Namespace) -> int:
    if args.sample is not None:
        arch = sample(load_space(args.arch), args.sample)
    else:
        try:
            arch = Architecture.load(args.arch)
        except ConfigError as e:
            if _is_space(args.arch):
                raise ConfigError(args.arch, None, "", "this is a search space, not an architecture; add --sample SEED to train one of its architectures") from None
            raise e from None
    settings = settings_from(args)
    _check_output(args.json)
    if settings.task == "lm":  # a corpus that cannot be read, or is shorter than a sequence, is one line before training
        load_corpus(settings.data, min_tokens=max(MIN_TOKENS, settings.seq_len + 2))
    print(f"architecture {arch.summary()} ({arch.digest})")
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} tokens"),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as bar:
        job = bar.add_task("training", total=settings.tokens, status="")
        last_eval = {}

        def on_step(tokens: int, loss: float) -> None:
            bar.update(job, completed=tokens, status=f"loss {loss:.3f}" + (f"  val {last_eval['val_loss']:.3f}" if last_eval else ""))

        metrics = run_proxy(arch, settings, report=last_eval.update, on_step=on_step)
    if metrics.status != "ok":
        print(f"status: {metrics.status}: {metrics.reason}")
    # the run's facts, how far it trained, what it measured, then the other records (wall time, ...)
    by_name = {m.name: m for m in PROXY_METRICS}
    order = ["tokens_trained"] + [m.name for m in PROXY_METRICS if m.objective]
    order += [m.name for m in PROXY_METRICS if m.name not in order]
    rows = [("device", metrics.device), ("parameters", human(metrics.params or 0))]
    for name in order:
        value = getattr(metrics, name)
        rows.append((by_name[name].label, "-" if value is None or value == "" else by_name[name].format_detail(value)))
    rows.append(("corpus", metrics.corpus_digest or "-"))
    for name, value in rows:
        if value != "-":
            print(f"  {name:<17} {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"architecture": arch.to_dict(), "digest": arch.digest, "metrics": metrics.to_dict()}, f, indent=1)
    return 0 if metrics.status == "ok" else 1


def _is_space(path: str) -> bool:
    try:
        load_space(path)
    except ConfigError:
        return False
    return True
