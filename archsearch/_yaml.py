"""Bounded, safe YAML loading that keeps the line of every key and item, so errors can point at them.

Every config file archsearch reads (search spaces, studies, architectures) comes through here. A file is refused
with one `SpaceError` line (FILE:LINE: KEY: what was expected) before any work beyond `LIMITS` is done:

- size: at most `max_bytes` (checked on disk before reading, then on the text);
- text: strict UTF-8 (a UTF-8 byte-order mark is allowed), and no control characters anywhere, comments included:
  only tab, line feed and CRLF pass; C0/C1 controls, DEL, lone CR, Unicode line/paragraph separators (parsers and
  editors would disagree on line numbers), bidirectional overrides (they hide text), surrogates and noncharacters
  do not. The same holds for strings made with escapes ("\\x1b"), which would otherwise reach the terminal;
- structure: at most `max_depth` nested collections and `max_nodes` nodes, where an alias counts as every node it
  stands for (a billion-laughs file fails at the alias that crosses the limit); recursive, undefined and duplicate
  anchors are refused; keys are names of at most `max_key_chars` characters;
- numbers: integers within +-`max_int` (2**53: exact as floats, so every later computation stays exact and
  overflow-free), floats finite. No field of a space, study or architecture has a use for .nan or .inf (an absent
  bound or budget is written by leaving the key out), so the reader refuses them everywhere;
- tags: plain YAML only (str, int, float, bool, null, map, seq); dates stay text.

Events come from libyaml when PyYAML has it (about 20x faster than the pure-Python parser) and are assembled here
with an explicit stack, so depth costs no recursion; a PyYAML error becomes one line, and a RecursionError or
MemoryError, should the limits ever let one through, too.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import SpaceError


@dataclass(frozen=True)
class Limits:
    """Bounds on one config file; real ones are a few KiB, at most some thousand nodes, under ten levels deep."""

    max_bytes: int = 1 << 20
    max_depth: int = 64  # nested mappings and lists
    max_nodes: int = 100_000  # scalars, mappings and lists (keys included), aliases expanded
    max_int: int = 2**53
    max_key_chars: int = 256  # keys are names: of fields, block families, metrics


LIMITS = Limits()

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
# Forbidden in the file (tab, LF and CRLF are the only controls a config file needs) and in any decoded string.
_FORBIDDEN = (
    "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff\ufdd0-\ufdef\ufeff\ufffe\uffff"
)
_BAD_TEXT = re.compile(f"[{_FORBIDDEN}]|\r(?!\n)")
_BAD_STRING = re.compile(f"[{_FORBIDDEN}\r]")
_BAD_KEY = re.compile(f"[{_FORBIDDEN}\r\n\t]")
_INT_CHARS = 80  # longer int scalars are refused before int() (whose cost grows with the square of the digits)
_PLAIN = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_PLAIN + t for t in ("str", "int", "float", "bool", "null")}
_TEXT_TAGS = {_PLAIN + t for t in ("timestamp", "value")}  # plain dates and `=` stay text: no field wants a date
_MERGE = _PLAIN + "merge"
_MERGE_KEY = object()  # what a `<<` key reads as (a sentinel: no string can pass for it)
_COLLECTION_TAGS = {_PLAIN + "map", _PLAIN + "seq"}
_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


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


def read_text(path: str, limits: Limits = LIMITS) -> str:
    """A config file's text: a regular file within the size limit, in UTF-8; anything else is a SpaceError."""
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise SpaceError(path, None, "", "is a directory; expected a YAML file")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
            raise SpaceError(path, None, "", "is not a regular file; expected a YAML file")
        if info.st_size > limits.max_bytes:
            with open(path, "rb") as f:
                head = f.read(limits.max_bytes)
            raise _too_big(path, head, info.st_size, limits)
        with open(path, "rb") as f:
            data = f.read(limits.max_bytes + 1)
    except OSError as e:
        raise SpaceError(path, None, "", f"cannot read the file ({e.strerror or e})") from None
    if len(data) > limits.max_bytes:  # it grew after the stat
        raise _too_big(path, data, len(data), limits)
    return _decode(data, path)


def load_file(path: str, limits: Limits = LIMITS) -> Node:
    """Read and parse a YAML config file within `limits`."""
    return load(read_text(path, limits), path, limits)


def load(text: str, file: str, limits: Limits = LIMITS) -> Node:
    """Parse YAML text within `limits` into a Node tree; every problem is one SpaceError naming file and line."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > limits.max_bytes:
        raise _too_big(file, data[: limits.max_bytes], len(data), limits)
    text = text.removeprefix("\ufeff")
    bad = _BAD_TEXT.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        raise SpaceError(file, line, "", f"control or invisible character {_codepoint(bad.group()[0])} at column "
                                         f"{column}; a config file holds printable text, tabs and line breaks only")
    builder = _Builder(file, limits)
    try:
        return builder.build(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark is not None else builder.line
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpaceError(file, line, "", f"invalid YAML: {problem}") from None
    except (RecursionError, MemoryError):  # a safety net: the limits above are meant to stop such files first
        raise SpaceError(file, builder.line, "", "the file is too large or too deeply nested to read") from None
    finally:
        if builder.loader is not None:
            builder.loader.dispose()


def _decode(data: bytes, file: str) -> str:
    for bom, name in _BOMS.items():
        if data.startswith(bom):
            raise SpaceError(file, 1, "", f"the file is {name}; expected UTF-8 (save it as UTF-8)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise SpaceError(file, line, "", f"not UTF-8: byte 0x{data[e.start]:02x} at column {column} "
                                         "cannot be decoded; expected a UTF-8 text file") from None


def _too_big(file: str, head: bytes, size: int, limits: Limits) -> SpaceError:
    line = head.count(b"\n") + 1  # where the limit is crossed
    return SpaceError(file, line, "", f"the file is {size:,} bytes, over the {_size(limits.max_bytes)} limit "
                                      "for a config file (crossed on this line)")


def _size(n: int) -> str:
    unit, scale = ("MiB", 2**20) if n >= 2**20 else ("KiB", 2**10)
    return f"{n / scale:g} {unit}"


def _codepoint(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def _tag(tag: str) -> str:
    return "!!" + tag.removeprefix(_PLAIN) if tag.startswith(_PLAIN) else _short(tag)


def _short(text: str) -> str:
    """A piece of the file as a message shows it: printable, one line, at most 40 characters."""
    if _BAD_KEY.search(text):
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class _Frame:
    """A mapping or list being read: its Node, where it sits, and what it holds so far."""

    node: Node
    key: str  # its place in the parent: "name" in a mapping, "[3]" in a list, "" at the root
    anchor: str | None
    size: int = 1  # nodes, aliases expanded
    height: int = 1  # nested collections, itself included
    pending: tuple[Any, int] | None = None  # a mapping's key (name or _MERGE_KEY) and line, awaiting its value
    merged: list[dict[str, Node]] | None = None  # mappings merged in with `<<`, first one first

    @property
    def is_map(self) -> bool:
        return isinstance(self.node.value, dict)


class _Builder:
    """Events -> Node tree with an explicit stack: no recursion, every limit checked as the events arrive."""

    def __init__(self, file: str, limits: Limits) -> None:
        self.loader: yaml.SafeLoader | None = None
        self.file, self.limits = file, limits
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Node, int, int, int]] = {}  # name -> (node, size, height, line)
        self.open_anchors: dict[str, int] = {}  # anchors of collections still being read -> their line
        self.nodes = 0
        self.line = 1

    def fail(self, message: str, key: str | None = None, line: int | None = None) -> SpaceError:
        return SpaceError(self.file, line or self.line, self.path(key), message)

    def path(self, last: str | None = None) -> str:
        """The dotted key of the current position (as the space parser names keys), with `last` appended."""
        parts = [f.key for f in self.stack] + ([] if last is None else [last])
        if len(parts) > 8:  # a deep key is shown by its ends
            parts = [*parts[:3], "...", *parts[-4:]]
        out = ""
        for part in parts:
            part = _short(part)
            out += part if not out or part.startswith("[") or part == "..." else "." + part
        return out

    def child_key(self) -> str | None:
        """The key a node starting now will have; None for a mapping's key itself."""
        if not self.stack:
            return ""
        top = self.stack[-1]
        if not top.is_map:
            return f"[{len(top.node.value)}]"
        if top.pending is None:
            return None
        return "<<" if top.pending[0] is _MERGE_KEY else top.pending[0]

    def build(self, text: str) -> Node:
        self.loader = _Loader(text)
        get = self.loader.get_event
        get()  # stream start
        if self.loader.check_event(yaml.StreamEndEvent):
            raise self.fail("the file is empty; expected a YAML mapping")
        get()  # document start
        root = None
        while root is None:
            event = get()
            self.line = event.start_mark.line + 1
            if isinstance(event, yaml.ScalarEvent):
                root = self.attach(*self.scalar(event))
            elif isinstance(event, yaml.AliasEvent):
                root = self.attach(*self.alias(event))
            elif isinstance(event, yaml.CollectionStartEvent):
                self.start(event)
            else:  # a collection's end
                frame = self.stack.pop()
                node = self.finish(frame)
                if frame.anchor is not None:
                    del self.open_anchors[frame.anchor]
                    self.anchors[frame.anchor] = (node, frame.size, frame.height, frame.node.line)
                root = self.attach(node, frame.size, frame.height)
        get()  # document end
        if not self.loader.check_event(yaml.StreamEndEvent):
            self.line = self.loader.peek_event().start_mark.line + 1
            raise self.fail("a config file holds one YAML document; found a second one here")
        return root

    def count(self, n: int, what: str) -> None:
        self.nodes += n
        if self.nodes > self.limits.max_nodes:
            raise self.fail(f"{what} takes the file past {self.limits.max_nodes:,} values (nodes, aliases expanded); "
                            "a config file is far smaller", self.child_key() or "")

    def anchor(self, name: str | None) -> None:
        if name is None:
            return
        first = self.anchors[name][3] if name in self.anchors else self.open_anchors.get(name)
        if first is not None:
            raise self.fail(f"the anchor &{name} is defined twice (first on line {first}); give each its own name",
                            self.child_key() or "")

    def start(self, event: yaml.CollectionStartEvent) -> None:
        key = self.child_key()
        if len(self.stack) + 1 > self.limits.max_depth:
            raise self.fail(f"nested more than {self.limits.max_depth} levels deep", key or "")
        tag = event.tag
        if tag not in (None, "!") and tag not in _COLLECTION_TAGS:
            raise self.fail(f"invalid YAML: tag {_tag(tag)} is not allowed (plain YAML only)", key or "")
        self.anchor(event.anchor)
        self.count(1, "this value")
        value: dict | list = {} if isinstance(event, yaml.MappingStartEvent) else []
        self.stack.append(_Frame(Node(value, self.line, self.file), key if key is not None else "?", event.anchor))
        if event.anchor is not None:
            self.open_anchors[event.anchor] = self.line

    def scalar(self, event: yaml.ScalarEvent) -> tuple[Node, int, int]:
        key = self.child_key()
        where = key if key is not None else event.value
        self.anchor(event.anchor)
        self.count(1, "this value")
        resolved = event.tag is None or event.tag == "!"
        tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit) if resolved else event.tag
        if resolved and tag == _MERGE and key is None:
            value: Any = _MERGE_KEY
        elif resolved and tag in (*_TEXT_TAGS, _MERGE):
            value = event.value
        elif tag not in _SCALAR_TAGS:
            raise self.fail(f"invalid YAML: tag {_tag(tag)} is not allowed (plain YAML only)", where)
        elif tag == _PLAIN + "int" and len(event.value) > _INT_CHARS:
            raise self.fail(f"the integer {_short(event.value)} is out of range; expected at most "
                            f"{self.limits.max_int:.1e} in magnitude", where)
        else:
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
            try:
                value = self.loader.construct_object(node)
            except (ValueError, TypeError, OverflowError):
                raise self.fail(f"{_short(event.value)!r} is not a valid {_tag(tag)}", where) from None
            self.loader.constructed_objects.clear()
        if isinstance(value, str) and tag == _PLAIN + "str" and not event.style and _SCIENTIFIC.match(value):
            value = float(value)  # YAML 1.1 reads 1e-3 as a string; every user means the number
        self.check_value(value, event.value, where)
        node = Node(value, self.line, self.file)
        if event.anchor is not None:
            self.anchors[event.anchor] = (node, 1, 0, self.line)
        return node, 1, 0

    def check_value(self, value: Any, text: str, where: str) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > self.limits.max_int:
            raise self.fail(f"the integer {_short(text)} is out of range; expected at most {self.limits.max_int:.1e} "
                            "in magnitude", where)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(f"{_short(text)} is not a finite number; no setting takes nan or infinity "
                            "(leave a bound out instead)", where)
        if isinstance(value, str):
            bad = _BAD_STRING.search(value)
            if bad:
                raise self.fail(f"the string holds control or invisible character {_codepoint(bad.group())}; "
                                "expected printable text", where)

    def alias(self, event: yaml.AliasEvent) -> tuple[Node, int, int]:
        key = self.child_key() or ""
        name = event.anchor
        if name in self.open_anchors:
            raise self.fail(f"the alias *{name} refers to a value that contains it (a recursive alias)", key)
        if name not in self.anchors:
            raise self.fail(f"the alias *{name} refers to no anchor defined above it", key)
        node, size, height, _ = self.anchors[name]
        if len(self.stack) + height > self.limits.max_depth:
            raise self.fail(f"the alias *{name} nests the file more than {self.limits.max_depth} levels deep", key)
        self.count(size, f"the alias *{name} ({size:,} values)")
        return node, size, height

    def finish(self, frame: _Frame) -> Node:
        if frame.is_map and frame.merged:
            explicit = frame.node.value
            merged: dict[str, Node] = {}
            for mapping in frame.merged:
                for k, v in mapping.items():
                    merged.setdefault(k, v)
            frame.node.value = {**{k: v for k, v in merged.items() if k not in explicit}, **explicit}
        return frame.node

    def attach(self, node: Node, size: int, height: int) -> Node | None:
        """Place a finished node in the collection being read; returns it when it is the document's root."""
        if not self.stack:
            return node
        top = self.stack[-1]
        top.size += size
        top.height = max(top.height, height + 1)
        if not top.is_map:
            top.node.value.append(node)
            return None
        if top.pending is None:
            top.pending = (self.key_name(node), self.line)
            return None
        key, key_line = top.pending
        top.pending = None
        if key is _MERGE_KEY:
            top.merged = (top.merged or []) + self.merge_sources(node, key_line)
            return None
        if key in top.node.value:
            raise self.fail("the key appears twice in this mapping", key, key_line)
        # an error about a value points at its key: that is where a reader looks (a new Node: aliases share theirs)
        top.node.value[key] = Node(node.value, key_line, self.file)
        return None

    def key_name(self, node: Node) -> str | object:
        key = node.value
        if key is _MERGE_KEY:
            return _MERGE_KEY
        if isinstance(key, bool) or not isinstance(key, str | int | float):
            raise self.fail("a key must be a plain name", "" if isinstance(key, dict | list) else str(key))
        key = str(key)
        if _BAD_KEY.search(key):
            raise self.fail("a key must be a plain name (no tabs, line breaks or control characters)", key)
        if len(key) > self.limits.max_key_chars:
            raise self.fail(f"a key must be a plain name of at most {self.limits.max_key_chars} characters", key)
        return key

    def merge_sources(self, node: Node, line: int) -> list[dict[str, Node]]:
        sources = node.value if isinstance(node.value, list) else [node]
        if not all(isinstance(s.value, dict) for s in sources):
            raise self.fail("a merge (<<) takes a mapping or a list of mappings", "<<", line)
        return [s.value for s in sources]
