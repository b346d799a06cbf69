"""Safe YAML loading that keeps the line of every key and item, so errors can point at them."""

from __future__ import annotations

import re
from typing import Any

import yaml

from .errors import SpaceError

_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


class Node:
    """A parsed YAML value with its source position; mappings and lists hold Nodes."""

    __slots__ = ("value", "line", "file")

    def __init__(self, value: Any, line: int, file: str) -> None:
        self.value, self.line, self.file = value, line, file

    def plain(self) -> Any:
        """The value with every Node unwrapped (for values that are data, not syntax)."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value

    def __repr__(self) -> str:
        return f"Node({self.value!r}, line={self.line})"


def load(text: str, file: str) -> Node:
    """Parse YAML text with the safe loader into a Node tree; syntax errors become a SpaceError."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise SpaceError(file, 1, "", "the file is empty; expected a YAML mapping")
        return _convert(loader, root, file)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpaceError(file, line, "", f"invalid YAML: {problem}") from None
    finally:
        loader.dispose()


def load_file(path: str) -> Node:
    """Read and parse a YAML file; unreadable files become a SpaceError."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceError(path, None, "", f"cannot read the file ({e.__class__.__name__}: {e.strerror or e})") from None
    return load(text, path)


_COLLECTION_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


def _convert(loader: yaml.SafeLoader, node: yaml.Node, file: str) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.CollectionNode) and node.tag not in _COLLECTION_TAGS:
        raise SpaceError(file, line, "", f"invalid YAML: tag {node.tag} is not allowed (plain YAML only)")
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[str, Node] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key_line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool) or isinstance(key, bool):
                raise SpaceError(file, key_line, str(key), "a key must be a plain name")
            key = str(key)
            if key in out:
                raise SpaceError(file, key_line, key, "the key appears twice in this mapping")
            value = _convert(loader, value_node, file)
            value.line = key_line  # an error about a value points at its key: that is where a reader looks
            out[key] = value
        return Node(out, line, file)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(loader, item, file) for item in node.value], line, file)
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str) and node.style is None and _SCIENTIFIC.match(value):
        value = float(value)  # YAML 1.1 reads 1e-3 as a string; every user means the number
    return Node(value, line, file)
