"""The typed config reader: a YAML mapping (a `_yaml.Node`) -> a dataclass, checked against its type hints.

Studies, proxy settings and architectures are read through here, so each setting is declared once (a dataclass
field with its type and default) and every mistake is one `FILE:LINE: KEY: what was expected` line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from . import _yaml
from .errors import ConfigError, SpaceError

Parser = Callable[[_yaml.Node, str], Any]


def fail(node: _yaml.Node, key: str, message: str, error: type[ConfigError] = ConfigError) -> ConfigError:
    """The error for `node`, written at `key`."""
    return error(node.file, node.line, key, message)


def read_file(path: str) -> _yaml.Node:
    """Read a config file that is not a search space (its YAML errors are ConfigErrors, not SpaceErrors)."""
    try:
        return _yaml.load_file(path)
    except SpaceError as e:
        raise ConfigError(e.file, e.line, e.key, e.message) from None


def read_text(text: str, file: str) -> _yaml.Node:
    """Parse config text that is not a search space (see `read_file`)."""
    try:
        return _yaml.load(text, file)
    except SpaceError as e:
        raise ConfigError(e.file, e.line, e.key, e.message) from None


def subkey(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def read_fields(cls: type, node: _yaml.Node, key: str, *, noun: str = "setting", parsers: Mapping[str, Parser] | None = None,
                error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The keyword arguments of `cls` that the mapping `node` sets, each read by its field's type hint (or by the
    parser named for it in `parsers`). Unknown keys and fields without a default that are missing are errors."""
    parsers = parsers or {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = list(fields) + [p for p in parsers if p not in fields]
    if not isinstance(node.value, dict):
        raise fail(node, key, f"expected a mapping of {', '.join(names)}", error)
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for name, sub in node.value.items():
        k = subkey(key, name)
        if name in parsers:
            out[name] = parsers[name](sub, k)
        elif name in fields:
            out[name] = read_value(hints[name], sub, k, error)
        else:
            raise fail(sub, k, f"unknown {noun}; expected one of {', '.join(names)}", error)
    for name, f in fields.items():
        if name not in out and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise fail(node, subkey(key, name), "missing", error)
    return out


def read_dataclass(cls: type, node: _yaml.Node, key: str, **kwargs: Any) -> Any:
    """`cls` built from the mapping `node` (see `read_fields`)."""
    return cls(**read_fields(cls, node, key, **kwargs))


def read_value(hint: Any, node: _yaml.Node, key: str, error: type[ConfigError] = ConfigError) -> Any:
    """One value checked against a type hint: bool, int (non-negative), float, str, Literal[...], X | None,
    bool | Literal[...], tuple[X, ...], a dataclass."""
    v = node.value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if v is None and len(options) < len(args):
            return None
        if len(options) == 1:
            return read_value(options[0], node, key, error)
        if not all(o is bool or typing.get_origin(o) is typing.Literal for o in options):
            raise TypeError(f"{key}: the reader takes X | None or bool | Literal[...], not {hint}")
        if isinstance(v, bool) or v in literal_choices(hint):  # e.g. compile: true, false or auto
            return v
        raise fail(node, key, f"expected {', '.join(map(str, literal_choices(hint)))} or true/false, got {v!r}", error)
    if origin is typing.Literal:
        if v in args:
            return v
        raise fail(node, key, f"expected one of {', '.join(map(str, args))}, got {v!r}", error)
    if hint is bool:
        if isinstance(v, bool):
            return v
        raise fail(node, key, f"expected true or false, got {v!r}", error)
    if hint is int:
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
        raise fail(node, key, f"expected a non-negative integer, got {v!r}", error)
    if hint is float:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        raise fail(node, key, f"expected a number, got {v!r}", error)
    if hint is str:
        if isinstance(v, str | int | float) and not isinstance(v, bool):
            return str(v)
        raise fail(node, key, f"expected a string, got {node.plain()!r}", error)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(v, list):
            raise fail(node, key, f"expected a list, got {node.plain()!r}", error)
        return tuple(read_value(args[0], item, f"{key}[{i}]", error) for i, item in enumerate(v))
    if dataclasses.is_dataclass(hint):
        return read_dataclass(hint, node, key, error=error)
    if hint is Any:
        return node.plain()
    raise TypeError(f"{key}: the reader has no rule for {hint}")


def literal_choices(hint: Any) -> tuple[Any, ...]:
    """The values a `Literal[...]` in `hint` (alone or in a union) allows."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    return tuple(c for a in typing.get_args(hint) if typing.get_origin(a) is typing.Literal for c in typing.get_args(a))


def positive_int(node: _yaml.Node, key: str, error: type[ConfigError] = ConfigError) -> int:
    v = node.value
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise fail(node, key, f"expected a positive integer, got {v!r}", error)
    return v
