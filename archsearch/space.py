"""The search-space language (the block algebra): YAML text -> a validated `SearchSpace`.

The grammar is documented in docs/search-spaces.md. Parsing checks everything that can be checked without
drawing values; `archsearch.sampling` walks the result to draw architectures, and `archsearch.load_space` (in
`archsearch.loading`) parses a file and probes it for a feasible architecture.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from . import _yaml
from .architecture import MAX_CONTEXT, MAX_D_MODEL, MAX_LAYERS, MAX_VOCAB
from .blocks import NONE, REGISTRY
from .errors import ConfigError, SpaceError
from .metrics import CONSTRAINTS, format_metric

# --- values and domains -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loc:
    """Where a value was written: file, line, and its dotted key (also the name a sampler sees)."""

    file: str
    line: int | None
    key: str

    def error(self, message: str, key: str | None = None) -> SpaceError:
        return SpaceError(self.file, self.line, self.key if key is None else key, message)


@dataclass(frozen=True)
class Fixed:
    value: Any
    loc: Loc


@dataclass(frozen=True)
class Categorical:
    options: tuple[Any, ...]
    loc: Loc
    per_layer: bool = False

    def labels(self) -> list[str]:
        return [label(o) for o in self.options]


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    loc: Loc
    step: int = 1
    log: bool = False
    per_layer: bool = False


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    loc: Loc
    step: float | None = None
    log: bool = False
    per_layer: bool = False


Value = Fixed | Categorical | IntRange | FloatRange
DOMAIN_KEYS = {"choice", "int", "float"}


def label(option: Any) -> str:
    """How an option is shown to a sampler (Optuna wants strings for anything but scalars)."""
    if isinstance(option, BlockRef):
        return option.label()
    if isinstance(option, list | tuple):
        return "[" + ", ".join(label(o) for o in option) + "]"
    return str(option).lower() if isinstance(option, bool) else str(option)


def candidates(value: Value) -> list[Any]:
    """Values a domain can take, for static checks: all options, or a range's two ends."""
    if isinstance(value, Fixed):
        return [value.value]
    if isinstance(value, Categorical):
        return list(value.options)
    return [value.low, value.high]


def bounds(value: Value) -> tuple[Any, Any]:
    """Smallest and largest value of a numeric domain."""
    values = candidates(value)
    return min(values), max(values)


# --- the parsed space ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockRef:
    """A block as written: a family and the parameters written beside it (values may be domains)."""

    family: str
    params: tuple[tuple[str, Value], ...]
    loc: Loc

    def label(self) -> str:
        if not self.params:
            return self.family
        inner = ", ".join(f"{k}={label(v.value) if isinstance(v, Fixed) else '?'}" for k, v in self.params)
        return f"{self.family}({inner})"


@dataclass(frozen=True)
class LayerTemplate:
    """A layer as written: mixer and channel (each a Value over BlockRefs, or None if not set) and flat params."""

    mixer: Value | None
    channel: Value | None
    params: tuple[tuple[str, Value], ...]
    loc: Loc


@dataclass(frozen=True)
class Repeat:
    """A group of layers written once and repeated `times` times."""

    times: Value
    items: tuple[LayerTemplate | Repeat, ...]
    loc: Loc


@dataclass(frozen=True)
class Every:
    k: Value
    offset: Value | None  # None: k - 1, i.e. the k-th, 2k-th, ... layers


@dataclass(frozen=True)
class At:
    positions: Value  # a list of positions, or a choice over lists


@dataclass(frozen=True)
class Searched:
    k: Value
    among: tuple[int, ...] | None  # None: every position
    loc: Loc


@dataclass(frozen=True)
class Placement:
    selector: Every | At | Searched
    template: LayerTemplate


@dataclass(frozen=True)
class Bound:
    """A bound on one cost metric of the concrete architecture, evaluated at `context` tokens."""

    metric: str
    low: float | None
    high: float | None
    loc: Loc
    context: int = 2048
    dtype_bytes: int = 2

    def violation(self, value: float) -> str | None:
        if self.low is not None and value < self.low:
            return f"{self.metric} {format_metric(self.metric, value)} < min {format_metric(self.metric, self.low)}"
        if self.high is not None and value > self.high:
            return f"{self.metric} {format_metric(self.metric, value)} > max {format_metric(self.metric, self.high)}"
        return None


@dataclass(frozen=True)
class Constraints:
    """Bounds on the concrete architecture (a space's, and a study's on top of them); `context` and `dtype_bytes`
    are where costs are evaluated for reporting."""

    context: int = 2048
    dtype_bytes: int = 2
    bounds: tuple[Bound, ...] = ()
    loc: Loc | None = None

    def violations(self, arch) -> list[str]:
        """The bounds a concrete architecture breaks, as readable strings."""
        costs = {}
        out = []
        for b in self.bounds:
            if (b.context, b.dtype_bytes) not in costs:
                costs[b.context, b.dtype_bytes] = arch.cost(b.context, b.dtype_bytes)
            problem = b.violation(getattr(costs[b.context, b.dtype_bytes], b.metric))
            if problem:
                out.append(problem)
        return out

    def joined(self, other: Constraints) -> Constraints:
        """These bounds and `other`'s (each keeps its own context); the context for reporting stays this one's."""
        return dataclasses.replace(self, bounds=self.bounds + other.bounds)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space. Build with `archsearch.load_space(path)` or `archsearch.space_from_yaml(text)`."""

    name: str
    file: str
    d_model: Value
    n_layers: Value | None  # None when `layers` is a sequence, which sets the depth
    vocab_size: int
    tie_embeddings: Value
    base: LayerTemplate | None
    sequence: tuple[LayerTemplate | Repeat, ...] | None
    place: tuple[Placement, ...]
    defaults: dict[str, dict[str, Value]] = field(hash=False)
    constraints: Constraints
    text: str = field(repr=False, compare=False)

    def depth_bounds(self) -> tuple[int, int]:
        """The smallest and largest number of layers in the space."""
        if self.n_layers is not None:
            return bounds(self.n_layers)
        return _sequence_bounds(self.sequence)

    def families(self) -> set[str]:
        """Every block family that can appear."""
        out = set()
        templates = [self.base] if self.base else list(_templates(self.sequence))
        templates += [p.template for p in self.place]
        for t in templates:
            for v in (t.mixer, t.channel):
                if v is not None:
                    out |= {ref.family for ref in candidates(v)}
        return out - {NONE}


def _templates(items):
    for item in items or ():
        if isinstance(item, Repeat):
            yield from _templates(item.items)
        else:
            yield item


def _sequence_bounds(items) -> tuple[int, int]:
    low = high = 0
    for item in items:
        if isinstance(item, Repeat):
            lo, hi = _sequence_bounds(item.items)
            t_lo, t_hi = bounds(item.times)
            low, high = low + lo * t_lo, high + hi * t_hi
        else:
            low, high = low + 1, high + 1
    return low, high


# --- quantities ---------------------------------------------------------------------------------------------------

_UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGT]I?B?|[KMGT]?)\s*$", re.IGNORECASE)


def parse_quantity(value: Any) -> float | None:
    """30M, 1.5G, 16MiB, 3e7 or a plain number -> float; None if it is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        value = float(value) if abs(value) < 1e308 else math.inf  # an int past a float's range is not a quantity
    elif isinstance(value, str):
        m = _QUANTITY.match(value)
        if m:
            unit = m.group(2).upper()
            unit = unit if unit in _UNITS else unit.rstrip("B")
            if unit in _UNITS:
                value = float(m.group(1)) * _UNITS[unit]
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


# --- parsing ------------------------------------------------------------------------------------------------------

TOP_KEYS = {
    "name": "the space's name",
    "description": "free text",
    "vocab_size": "tokenizer vocabulary (256: bytes)",
    "d_model": "model width",
    "n_layers": "depth (with a uniform `layers` mapping)",
    "tie_embeddings": "share the embedding and output head",
    "layers": "the layer stack",
    "blocks": "per-family default parameters",
    "constraints": "bounds on the concrete architecture",
}
LAYER_KEYS = {"mixer", "channel"}
SELECTOR_KEYS = {"every", "offset", "at"}


class _Parser:
    def __init__(self, file: str, error: type[ConfigError] = SpaceError) -> None:
        self.file, self.error = file, error

    def loc(self, node: _yaml.Node, key: str) -> Loc:
        return Loc(self.file, node.line, key)

    def fail(self, node: _yaml.Node, key: str, message: str) -> ConfigError:
        return self.error(self.file, node.line, key, message)

    # values -------------------------------------------------------------------------------------------------------
    def value(self, node: _yaml.Node, key: str, per_layer_ok: bool = False, option=None) -> Value:
        """A fixed value or a domain ({choice}, {int}, {float}). `option` parses choice options (default: scalars)."""
        option = option or self.scalar
        v = node.value
        if isinstance(v, dict) and DOMAIN_KEYS & set(v):
            return self.domain(node, key, per_layer_ok, option)
        return Fixed(option(node, key), self.loc(node, key))

    def scalar(self, node: _yaml.Node, key: str) -> Any:
        if isinstance(node.value, dict | list) or node.value is None:
            raise self.fail(node, key, "expected a number, a name or a domain ({choice: [...]}, {int: [lo, hi]}, {float: [lo, hi]})")
        return node.value

    def domain(self, node: _yaml.Node, key: str, per_layer_ok: bool, option) -> Value:
        spec = node.value
        kinds = DOMAIN_KEYS & set(spec)
        if len(kinds) > 1:
            raise self.fail(node, key, f"a domain has one of choice, int, float; got {', '.join(sorted(kinds))}")
        kind = kinds.pop()
        allowed = {kind, "per_layer"} | ({"log", "step"} if kind != "choice" else set())
        for k, sub in spec.items():
            if k not in allowed:
                raise self.fail(sub, f"{key}.{k}", f"unknown key in a {kind} domain; expected one of {', '.join(sorted(allowed))}")
        per_layer = self.flag(spec.get("per_layer"), f"{key}.per_layer", False)
        if per_layer and not per_layer_ok:
            raise self.fail(spec["per_layer"], f"{key}.per_layer", "per_layer is only meaningful inside layers")
        loc = self.loc(node, key)
        body = spec[kind]
        if kind == "choice":
            if not isinstance(body.value, list) or not body.value:
                raise self.fail(body, f"{key}.choice", "expected a non-empty list of options")
            options = tuple(option(o, f"{key}.choice[{i}]") for i, o in enumerate(body.value))
            labels = [label(o) for o in options]
            for i, lab in enumerate(labels):
                if labels.index(lab) != i:
                    raise self.fail(body.value[i], f"{key}.choice[{i}]", f"option {lab} is listed twice")
            return Categorical(options, loc, per_layer)
        if not isinstance(body.value, list) or len(body.value) != 2:
            raise self.fail(body, f"{key}.{kind}", f"expected [low, high], got {body.plain()!r}")
        low, high = (b.value for b in body.value)
        log = self.flag(spec.get("log"), f"{key}.log", False)
        step_node = spec.get("step")
        if kind == "int":
            for b in (low, high):
                if isinstance(b, bool) or not isinstance(b, int):
                    raise self.fail(body, f"{key}.int", f"expected integer bounds, got {body.plain()!r}")
            step = step_node.value if step_node else 1
            if isinstance(step, bool) or not isinstance(step, int) or step < 1:
                raise self.fail(step_node, f"{key}.step", "expected a positive integer")
            if low > high:
                raise self.fail(body, f"{key}.int", f"low {low} is above high {high}")
            if (high - low) % step:
                raise self.fail(step_node, f"{key}.step", f"{step} must divide high - low = {high - low}")
            if log and (low < 1 or step != 1):
                raise self.fail(spec["log"], f"{key}.log", "a log-scale int range needs low >= 1 and no step")
            return IntRange(low, high, loc, step, log, per_layer)
        for b in (low, high):
            if isinstance(b, bool) or not isinstance(b, int | float) or not math.isfinite(b):
                raise self.fail(body, f"{key}.float", f"expected numeric bounds, got {body.plain()!r}")
        if low >= high:
            raise self.fail(body, f"{key}.float", f"low {low} must be below high {high}")
        step = None
        if step_node is not None:
            step = step_node.value
            if isinstance(step, bool) or not isinstance(step, int | float) or step <= 0:
                raise self.fail(step_node, f"{key}.step", "expected a positive number")
        if log and (low <= 0 or step is not None):
            raise self.fail(spec["log"], f"{key}.log", "a log-scale float range needs low > 0 and no step")
        return FloatRange(float(low), float(high), loc, step, log, per_layer)

    def flag(self, node: _yaml.Node | None, key: str, default: bool) -> bool:
        if node is None:
            return default
        if not isinstance(node.value, bool):
            raise self.fail(node, key, f"expected true or false, got {node.value!r}")
        return node.value

    def positive_int(self, node: _yaml.Node, key: str, per_layer_ok: bool = False, cap: int | None = None) -> Value:
        value = self.value(node, key, per_layer_ok)
        for c in candidates(value):
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise self.fail(node, key, f"expected a positive integer, got {c!r}")
            if cap is not None and c > cap:
                raise self.fail(node, key, f"expected a positive integer of at most {cap:,}, got {c:,}")
        return value

    # blocks -------------------------------------------------------------------------------------------------------
    def block_ref(self, node: _yaml.Node, key: str, role: str) -> BlockRef:
        v = node.value
        if isinstance(v, str):
            name, params = v, {}
        elif isinstance(v, dict) and "block" in v:
            name, params = v["block"].value, {k: n for k, n in v.items() if k != "block"}
        else:
            raise self.fail(node, key, f"expected a {role} block name, {{block: NAME, ...params}} or a choice")
        options = [n for n, f in REGISTRY.items() if f.role == role] + ([NONE] if role == "channel" else [])
        if name not in options:
            hint = f" ({name} is a {REGISTRY[name].role} block)" if name in REGISTRY else ""
            raise self.fail(node, key, f"unknown {role} block {name!r}{hint}; expected one of {', '.join(options)}")
        parsed = []
        for pname, pnode in params.items():
            pkey = f"{key}.{pname}"
            fam = REGISTRY.get(name)
            if fam is None or pname not in fam.params:
                raise self.fail(pnode, pkey, f"{name} has no parameter {pname!r}{_expected(fam)}")
            value = self.value(pnode, pkey, per_layer_ok=True)
            self.check_param(name, pname, value, pnode, pkey)
            parsed.append((pname, value))
        return BlockRef(name, tuple(parsed), self.loc(node, key))

    def block_value(self, node: _yaml.Node, key: str, role: str) -> Value:
        if isinstance(node.value, dict) and DOMAIN_KEYS & set(node.value) - {"choice"}:  # blocks are chosen, not ranged
            raise self.fail(node, key, f"a {role} block is a name, a {{block: ...}} mapping or {{choice: [...]}} of them")
        return self.value(node, key, per_layer_ok=True, option=lambda n, k: self.block_ref(n, k, role))

    def check_param(self, family: str, pname: str, value: Value, node: _yaml.Node, key: str) -> None:
        decl = REGISTRY[family].params[pname]
        if isinstance(value, FloatRange) and decl.kind is not float:
            raise self.fail(node, key, f"{family}.{pname} is {'an integer' if decl.kind is int else decl.kind.__name__}; use {{choice: [...]}} or {{int: [lo, hi]}}")
        if isinstance(value, IntRange) and decl.kind not in (int, float):
            raise self.fail(node, key, f"{family}.{pname} takes {decl.kind.__name__} values; use {{choice: [...]}}")
        for c in candidates(value):
            problem = decl.problem(c)
            if problem:
                raise self.fail(node, key, f"{family}.{pname}: {problem}")

    # layers -------------------------------------------------------------------------------------------------------
    def template(self, node: _yaml.Node, key: str, extra_keys: set[str] = frozenset(), need_blocks: bool = True) -> LayerTemplate:
        """A layer written as {mixer, channel, ...params} (or 'mixer+channel'); keys in extra_keys are skipped."""
        if isinstance(node.value, str):
            return self.shorthand(node, key)
        if not isinstance(node.value, dict):
            raise self.fail(node, key, "expected a layer: {mixer: ..., channel: ...} or 'mixer+channel'")
        spec = node.value
        if need_blocks:
            for part in ("mixer", "channel"):
                if part not in spec:
                    raise self.fail(node, f"{key}.{part}", "missing" + ("; use 'none' for no channel block" if part == "channel" else ""))
        mixer = self.block_value(spec["mixer"], f"{key}.mixer", "mixer") if "mixer" in spec else None
        channel = self.block_value(spec["channel"], f"{key}.channel", "channel") if "channel" in spec else None
        mixer_fams = {r.family for r in candidates(mixer)} if mixer else set()
        channel_fams = {r.family for r in candidates(channel)} - {NONE} if channel else set()
        if not mixer and not channel:
            mixer_fams = {n for n, f in REGISTRY.items() if f.role == "mixer"}
            channel_fams = {n for n, f in REGISTRY.items() if f.role == "channel"}
        params = []
        for pname, pnode in spec.items():
            if pname in LAYER_KEYS or pname in extra_keys:
                continue
            pkey = f"{key}.{pname}"
            takers_m = sorted(f for f in mixer_fams if pname in REGISTRY[f].params)
            takers_c = sorted(f for f in channel_fams if pname in REGISTRY[f].params)
            if not takers_m and not takers_c:
                here = ", ".join(sorted(mixer_fams | channel_fams))
                raise self.fail(pnode, pkey, f"unknown key: no block here ({here}) has a parameter {pname!r}")
            if takers_m and takers_c:
                raise self.fail(pnode, pkey, f"ambiguous: both {takers_m[0]} and {takers_c[0]} take {pname!r}; write it inside the block, e.g. mixer: {{block: {takers_m[0]}, {pname}: ...}}")
            value = self.value(pnode, pkey, per_layer_ok=True)
            for fam in takers_m + takers_c:
                self.check_param(fam, pname, value, pnode, pkey)
            params.append((pname, value))
        return LayerTemplate(mixer, channel, tuple(params), self.loc(node, key))

    def shorthand(self, node: _yaml.Node, key: str) -> LayerTemplate | Repeat:
        text = node.value
        m = re.fullmatch(r"\s*([a-z0-9_]+)\s*\+\s*([a-z0-9_]+)\s*(?:[x×*]\s*(\d+))?\s*", text)
        if not m:
            raise self.fail(node, key, f"expected 'MIXER+CHANNEL' or 'MIXER+CHANNEL x N', got {text!r}")
        loc = self.loc(node, key)
        mixer = Fixed(self.block_ref(_yaml.Node(m.group(1), node.line, node.file), f"{key}.mixer", "mixer"), loc)
        channel = Fixed(self.block_ref(_yaml.Node(m.group(2), node.line, node.file), f"{key}.channel", "channel"), loc)
        layer = LayerTemplate(mixer, channel, (), loc)
        if m.group(3) is None:
            return layer
        times = int(m.group(3)) if len(m.group(3)) <= 7 else MAX_LAYERS + 1  # int() refuses 4,300 digits and more
        if times > MAX_LAYERS:
            raise self.fail(node, key, f"x {m.group(3)[:12]}: expected at most {MAX_LAYERS:,} layers")
        if times < 1:
            raise self.fail(node, key, "repeat count must be at least 1")
        return Repeat(Fixed(times, loc), (layer,), loc)

    def sequence(self, node: _yaml.Node, key: str) -> tuple[LayerTemplate | Repeat, ...]:
        if not isinstance(node.value, list) or not node.value:
            raise self.fail(node, key, "expected a non-empty list of layers")
        items = []
        for i, item in enumerate(node.value):
            ikey = f"{key}[{i}]"
            if isinstance(item.value, dict) and "repeat" in item.value:
                spec = item.value
                for k, sub in spec.items():
                    if k not in ("repeat", "layers"):
                        raise self.fail(sub, f"{ikey}.{k}", "unknown key in a repeat group; expected repeat and layers")
                if "layers" not in spec:
                    raise self.fail(item, f"{ikey}.layers", "missing: the layers to repeat")
                times = self.positive_int(spec["repeat"], f"{ikey}.repeat")
                items.append(Repeat(times, self.sequence(spec["layers"], f"{ikey}.layers"), self.loc(item, ikey)))
            else:
                items.append(self.template(item, ikey))
        return tuple(items)

    def placement(self, node: _yaml.Node, key: str, depth: tuple[int, int]) -> Placement:
        if not isinstance(node.value, dict):
            raise self.fail(node, key, "expected a placement: {every: K | at: POSITIONS, mixer/channel/params...}")
        spec = node.value
        chosen = [k for k in ("every", "at") if k in spec]
        if len(chosen) != 1:
            raise self.fail(node, key, "a placement needs exactly one of every or at" + (f"; got {' and '.join(chosen)}" if chosen else ""))
        if "offset" in spec and "every" not in spec:
            raise self.fail(spec["offset"], f"{key}.offset", "offset goes with every")
        template = self.template(node, key, extra_keys=SELECTOR_KEYS, need_blocks=False)
        if template.mixer is None and template.channel is None and not template.params:
            raise self.fail(node, key, "a placement must set a mixer, a channel or a parameter")
        low_n, _ = depth
        if "every" in spec:
            k = self.positive_int(spec["every"], f"{key}.every")
            offset = None
            if "offset" in spec:
                offset = self.value(spec["offset"], f"{key}.offset")
                for c in candidates(offset):
                    if isinstance(c, bool) or not isinstance(c, int) or c < 0 or c >= bounds(k)[0]:
                        raise self.fail(spec["offset"], f"{key}.offset", f"expected an integer in [0, every), got {c!r}")
            if bounds(k)[1] > low_n:
                raise self.fail(spec["every"], f"{key}.every", f"every {bounds(k)[1]} selects no layer of a {low_n}-layer stack")
            return Placement(Every(k, offset), template)
        at = spec["at"]
        akey = f"{key}.at"
        if isinstance(at.value, dict) and "positions" in at.value:
            for k, sub in at.value.items():
                if k not in ("positions", "among"):
                    raise self.fail(sub, f"{akey}.{k}", "unknown key; expected positions and among")
            k = self.positive_int(at.value["positions"], f"{akey}.positions")
            among = None
            if "among" in at.value:
                among = tuple(self.positions(at.value["among"], f"{akey}.among", low_n))
                if len(set(among)) != len(among):
                    raise self.fail(at.value["among"], f"{akey}.among", "a position is listed twice")
            pool = len(among) if among is not None else low_n
            if bounds(k)[1] > pool:
                raise self.fail(at.value["positions"], f"{akey}.positions", f"cannot choose {bounds(k)[1]} of {pool} positions")
            return Placement(Searched(k, among, self.loc(at, akey)), template)
        value = self.value(at, akey, option=lambda n, kk: tuple(self.positions(n, kk, low_n)))
        return Placement(At(value), template)

    def positions(self, node: _yaml.Node, key: str, n: int) -> list[int]:
        items = node.value if isinstance(node.value, list) else [node]
        if not items:
            raise self.fail(node, key, "expected at least one position")
        out = []
        for item in items:
            p = item.value
            if isinstance(p, bool) or not isinstance(p, int):
                raise self.fail(item, key, f"expected layer positions (integers, 0-based, negative from the end), got {p!r}")
            if not -n <= p < n:
                raise self.fail(item, key, f"position {p} is out of range for {n} layers (0..{n - 1}, or -{n}..-1)")
            out.append(p)
        return out

    # the whole space ----------------------------------------------------------------------------------------------
    def space(self, root: _yaml.Node, text: str) -> SearchSpace:
        if not isinstance(root.value, dict):
            raise self.fail(root, "", "expected a mapping with d_model and layers")
        top = root.value
        for k, sub in top.items():
            if k not in TOP_KEYS:
                raise self.fail(sub, k, f"unknown key; expected one of {', '.join(TOP_KEYS)}")
        for k in ("d_model", "layers"):
            if k not in top:
                raise self.fail(root, k, "missing")
        name = top["name"].value if "name" in top else re.sub(r"\.ya?ml$", "", self.file.rsplit("/", 1)[-1])
        if not isinstance(name, str):
            raise self.fail(top["name"], "name", "expected a string")
        d_model = self.positive_int(top["d_model"], "d_model", cap=MAX_D_MODEL)
        vocab = self.positive_int(top["vocab_size"], "vocab_size", cap=MAX_VOCAB) if "vocab_size" in top else Fixed(256, None)
        if not isinstance(vocab, Fixed):
            raise self.fail(top["vocab_size"], "vocab_size", "the vocabulary is fixed by the tokenizer; expected an integer")
        tie = self.value(top["tie_embeddings"], "tie_embeddings") if "tie_embeddings" in top else Fixed(True, None)
        for c in candidates(tie):
            if not isinstance(c, bool):
                raise self.fail(top["tie_embeddings"], "tie_embeddings", f"expected true or false, got {c!r}")

        layers = top["layers"]
        base, sequence, place_node = None, None, None
        if isinstance(layers.value, list):
            sequence = self.sequence(layers, "layers")
        elif isinstance(layers.value, dict):
            spec = layers.value
            place_node = spec.get("place")
            if "sequence" in spec:
                for k, sub in spec.items():
                    if k not in ("sequence", "place"):
                        raise self.fail(sub, f"layers.{k}", "with layers.sequence, only place may stand beside it")
                sequence = self.sequence(spec["sequence"], "layers.sequence")
            else:
                base = self.template(layers, "layers", extra_keys={"place"})
        else:
            raise self.fail(layers, "layers", "expected a layer mapping {mixer, channel, place} or a list of layers")

        if sequence is not None:
            if "n_layers" in top:
                raise self.fail(top["n_layers"], "n_layers", "the layer list sets the depth; remove n_layers or use a {mixer, channel} mapping")
            n_layers, depth = None, _sequence_bounds(sequence)
            if depth[1] > MAX_LAYERS:
                raise self.fail(layers, "layers", f"up to {depth[1]:,} layers (with the repeats); expected at most {MAX_LAYERS:,}")
        else:
            if "n_layers" not in top:
                raise self.fail(root, "n_layers", "missing: a uniform layers mapping needs the depth")
            n_layers = self.positive_int(top["n_layers"], "n_layers", cap=MAX_LAYERS)
            depth = bounds(n_layers)

        place = ()
        if place_node is not None:
            if not isinstance(place_node.value, list):
                raise self.fail(place_node, "layers.place", "expected a list of placements")
            place = tuple(self.placement(p, f"layers.place[{i}]", depth) for i, p in enumerate(place_node.value))

        defaults = self.defaults(top["blocks"]) if "blocks" in top else {}
        constraints = self.constraints(top["constraints"]) if "constraints" in top else Constraints()
        return SearchSpace(name, self.file, d_model, n_layers, vocab.value, tie, base, sequence, place, defaults, constraints, text)

    def defaults(self, node: _yaml.Node) -> dict[str, dict[str, Value]]:
        if not isinstance(node.value, dict):
            raise self.fail(node, "blocks", "expected a mapping from block family to its default parameters")
        out = {}
        for fam_name, fnode in node.value.items():
            fkey = f"blocks.{fam_name}"
            fam = REGISTRY.get(fam_name)
            if fam is None:
                raise self.fail(fnode, fkey, f"unknown block family; expected one of {', '.join(REGISTRY)}")
            if not isinstance(fnode.value, dict):
                raise self.fail(fnode, fkey, "expected a mapping of parameters")
            out[fam_name] = {}
            for pname, pnode in fnode.value.items():
                pkey = f"{fkey}.{pname}"
                if pname not in fam.params:
                    raise self.fail(pnode, pkey, f"{fam_name} has no parameter {pname!r}{_expected(fam)}")
                value = self.value(pnode, pkey)
                self.check_param(fam_name, pname, value, pnode, pkey)
                out[fam_name][pname] = value
        return out

    def constraints(self, node: _yaml.Node) -> Constraints:
        if not isinstance(node.value, dict):
            raise self.fail(node, "constraints", "expected a mapping")
        context, dtype_bytes, found = 2048, 2, []
        for k, sub in node.value.items():
            key = f"constraints.{k}"
            if k in ("context", "dtype_bytes"):
                v = sub.value
                top_value = MAX_CONTEXT if k == "context" else 16
                if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top_value:
                    raise self.fail(sub, key, f"expected a positive integer of at most {top_value:,}")
                context, dtype_bytes = (v, dtype_bytes) if k == "context" else (context, v)
                continue
            if k not in CONSTRAINTS:
                raise self.fail(sub, key, f"unknown constraint; expected one of context, dtype_bytes, {', '.join(CONSTRAINTS)}")
            if not isinstance(sub.value, dict) or not sub.value or set(sub.value) - {"min", "max"}:
                raise self.fail(sub, key, "expected {min: N, max: N} (either or both; 30M, 2G, 16MiB allowed)")
            lim = {}
            for side, snode in sub.value.items():
                q = parse_quantity(snode.value)
                if q is None or q < 0:
                    raise self.fail(snode, f"{key}.{side}", f"expected a non-negative quantity like 30M or 16MiB, got {snode.value!r}")
                lim[side] = q
            if "min" in lim and "max" in lim and lim["min"] > lim["max"]:
                raise self.fail(sub, key, f"impossible: min {format_metric(k, lim['min'])} is above max {format_metric(k, lim['max'])}")
            found.append((k, lim.get("min"), lim.get("max"), self.loc(sub, key)))
        bounds = tuple(Bound(*b, context=context, dtype_bytes=dtype_bytes) for b in found)  # context may follow the bounds
        return Constraints(context, dtype_bytes, bounds, self.loc(node, "constraints"))


def _expected(fam) -> str:
    return f"; expected one of {', '.join(fam.params)}" if fam is not None and fam.params else ""


def parse_space(root: _yaml.Node, text: str) -> SearchSpace:
    """A parsed YAML tree (a space file's root, or a study's inline `space`) -> a SearchSpace, not yet probed for
    feasibility (`archsearch.loading` does that)."""
    return _Parser(root.file).space(root, text)


def parse_constraints(node: _yaml.Node, error: type[ConfigError] = SpaceError) -> Constraints:
    """A `constraints` mapping (of a space, or of a study: pass ConfigError) -> Constraints."""
    return _Parser(node.file, error).constraints(node)


def read_space(text: str, file: str = "<space>") -> SearchSpace:
    """Parse search-space YAML text (no feasibility probe; see `archsearch.space_from_yaml`)."""
    return parse_space(_yaml.load(text, file), text)


# --- describing a space -------------------------------------------------------------------------------------------


def describe(value: Value | Searched) -> str:
    """A domain in words, as `archsearch check` prints it."""
    if isinstance(value, Searched):
        pool = f"among {list(value.among)}" if value.among is not None else "among all layers"
        return f"positions: {describe(value.k) if not isinstance(value.k, Fixed) else value.k.value} {pool}"
    if isinstance(value, Fixed):
        return label(value.value)
    if isinstance(value, Categorical):
        text = "choice [" + ", ".join(value.labels()) + "]"
    else:
        kind = "int" if isinstance(value, IntRange) else "float"
        text = f"{kind} [{value.low}, {value.high}]" + (f" step {value.step}" if value.step not in (None, 1) else "")
        text += " log" if value.log else ""
    return text + (" per layer" if value.per_layer else "")


def parameters(space: SearchSpace) -> list[tuple[str, str]]:
    """Every searched value of the space: (key, domain in words), in the order they are written."""
    out: list[tuple[str, str]] = []

    def visit(value, note: str = "") -> None:
        if value is None or isinstance(value, Fixed) and not isinstance(value.value, BlockRef):
            return
        if not isinstance(value, Fixed):
            out.append((value.loc.key, describe(value) + note))
        for option in candidates(value):
            if isinstance(option, BlockRef):
                for _, v in option.params:
                    visit(v, f"  (where {option.family})" if isinstance(value, Categorical) else note)

    def visit_template(t: LayerTemplate) -> None:
        visit(t.mixer)
        visit(t.channel)
        for _, v in t.params:
            visit(v)

    def visit_items(items) -> None:
        for item in items:
            if isinstance(item, Repeat):
                visit(item.times)
                visit_items(item.items)
            else:
                visit_template(item)

    for v in (space.d_model, space.n_layers, space.tie_embeddings):
        visit(v)
    if space.base is not None:
        visit_template(space.base)
    visit_items(space.sequence or ())
    for p in space.place:
        sel = p.selector
        if isinstance(sel, Every):
            visit(sel.k)
            visit(sel.offset)
        elif isinstance(sel, At):
            visit(sel.positions)
        else:
            out.append((sel.loc.key, describe(sel)))
        visit_template(p.template)
    for fam, params in space.defaults.items():
        for v in params.values():
            visit(v, f"  (where {fam})")
    return out
