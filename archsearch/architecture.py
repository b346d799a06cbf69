"""One concrete hybrid in normal form (an explicit list of layers, every parameter resolved) and its cost model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import yaml

from . import _yaml
from .blocks import NONE, REGISTRY, BlockFamily
from .errors import ConstraintViolation, SpaceError


@dataclass(frozen=True)
class BlockSpec:
    """A block family and all of its parameters, resolved (defaults filled in, values canonical)."""

    family: str
    params: tuple[tuple[str, Any], ...]

    @classmethod
    def make(cls, family: str, params: dict[str, Any], d_model: int) -> BlockSpec:
        """Resolve `params` against the family's declarations; unknown names or bad values raise KeyError/ValueError."""
        fam = REGISTRY[family]
        unknown = set(params) - set(fam.params)
        if unknown:
            raise KeyError(sorted(unknown)[0])
        full = {name: params.get(name, decl.default) for name, decl in fam.params.items()}
        full = fam.resolve(full, d_model)
        for name, decl in fam.params.items():
            problem = decl.problem(full[name])
            if problem:
                raise ValueError(name, problem)
            full[name] = decl.normalise(full[name])
        return cls(family, tuple(sorted(full.items())))

    @property
    def p(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def fam(self) -> BlockFamily:
        return REGISTRY[self.family]

    def to_dict(self) -> dict[str, Any]:
        return {"block": self.family, **self.p}

    def label(self) -> str:
        return f"{self.family}({', '.join(f'{k}={v}' for k, v in self.params)})"


@dataclass(frozen=True)
class LayerSpec:
    """A residual layer: a mixer block, then a channel block (None: no channel block)."""

    mixer: BlockSpec
    channel: BlockSpec | None = None


@dataclass(frozen=True)
class Cost:
    """What an architecture costs, from its parameters alone (no GPU, no weights)."""

    params: int  # every trainable parameter, embeddings included
    active_params: int  # those one token goes through (differs from params with mixture of experts)
    flops_per_token: float  # forward, averaged over `context` tokens
    state_bytes: int  # decode state after `context` tokens
    context: int


@dataclass(frozen=True)
class Architecture:
    """A hybrid language model in normal form. Frozen and hashable: equal architectures hash equal."""

    d_model: int
    layers: tuple[LayerSpec, ...]
    vocab_size: int = 256
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        problems = self.violations()
        if problems:
            raise ConstraintViolation("; ".join(f"layer {i} {role} {key}: {msg}" for i, role, key, msg in problems))

    # --- identity -------------------------------------------------------------------------------------------------
    @cached_property
    def digest(self) -> str:
        """A stable content hash (the same across processes and machines), for trial tables and deduplication."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def summary(self) -> str:
        """One line: a letter per mixer, channel letters where not all glu, width and parameter count."""
        mixers = "".join(layer.mixer.fam.letter for layer in self.layers)
        channels = "".join(layer.channel.fam.letter if layer.channel else "-" for layer in self.layers)
        shape = mixers if set(channels) == {"g"} else f"{mixers}/{channels}"
        return f"{shape} d={self.d_model} {human(self.cost().params)}"

    # --- rules ----------------------------------------------------------------------------------------------------
    def violations(self) -> list[tuple[int, str, str, str]]:
        """Family rules the concrete blocks break: (layer, role, parameter, message)."""
        out = []
        for i, layer in enumerate(self.layers):
            for role, block in (("mixer", layer.mixer), ("channel", layer.channel)):
                if block is not None:
                    out += [(i, role, key, msg) for key, msg in block.fam.violations(block.p, self.d_model)]
        return out

    # --- cost model -----------------------------------------------------------------------------------------------
    def cost(self, context: int = 2048, dtype_bytes: int = 2) -> Cost:
        d, v = self.d_model, self.vocab_size
        params = v * d * (1 if self.tie_embeddings else 2) + d  # embedding, head, final norm
        active, flops, state = params, 2.0 * d * v, 0  # the head's matmul
        for layer in self.layers:
            params += d + (d if layer.channel else 0)  # pre-norms
            active += d + (d if layer.channel else 0)
            for block in (layer.mixer, layer.channel):
                if block is None:
                    continue
                fam, p = block.fam, block.p
                n = fam.param_count(p, d)
                params += n
                active += fam.active_param_count(p, d) if hasattr(fam, "active_param_count") else n
                flops += fam.flops_per_token(p, d, context)
                state += fam.state_bytes(p, d, context, dtype_bytes)
        return Cost(params, active, flops, state, context)

    # --- serialisation --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "d_model": self.d_model,
            "vocab_size": self.vocab_size,
            "tie_embeddings": self.tie_embeddings,
            "layers": [
                {"mixer": layer.mixer.to_dict(), "channel": layer.channel.to_dict() if layer.channel else NONE}
                for layer in self.layers
            ],
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=120)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_yaml(cls, text: str, file: str = "<architecture>") -> Architecture:
        return _from_node(_yaml.load(text, file))

    from_json = from_yaml  # JSON is YAML

    @classmethod
    def load(cls, path: str) -> Architecture:
        return _from_node(_yaml.load_file(path))


def human(n: float) -> str:
    """12.3M, 1.2G, 850K: a count at a glance."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def human_bytes(n: float) -> str:
    """3.2MiB, 512.0KiB, 100B."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}B"


def human_metric(metric: str, value: float) -> str:
    """A cost figure in its natural unit (bytes for state, counts otherwise)."""
    return human_bytes(value) if metric.endswith("bytes") else human(value)


def _from_node(root: _yaml.Node) -> Architecture:
    f = root.file
    if not isinstance(root.value, dict):
        raise SpaceError(f, root.line, "", "expected a mapping with d_model and layers")
    known = {"d_model", "vocab_size", "tie_embeddings", "layers"}
    for key, node in root.value.items():
        if key not in known:
            raise SpaceError(f, node.line, key, f"unknown key; expected one of {', '.join(sorted(known))}")
    for key in ("d_model", "layers"):
        if key not in root.value:
            raise SpaceError(f, root.line, key, "missing")
    d_model = _int(root.value["d_model"], "d_model")
    vocab = _int(root.value["vocab_size"], "vocab_size") if "vocab_size" in root.value else 256
    tie = root.value["tie_embeddings"].value if "tie_embeddings" in root.value else True
    if not isinstance(tie, bool):
        raise SpaceError(f, root.value["tie_embeddings"].line, "tie_embeddings", "expected true or false")
    layers_node = root.value["layers"]
    if not isinstance(layers_node.value, list) or not layers_node.value:
        raise SpaceError(f, layers_node.line, "layers", "expected a non-empty list of {mixer, channel}")
    layers = []
    for i, item in enumerate(layers_node.value):
        key = f"layers[{i}]"
        if not isinstance(item.value, dict) or set(item.value) - {"mixer", "channel"} or "mixer" not in item.value:
            raise SpaceError(f, item.line, key, "expected a mapping with mixer and channel")
        mixer = _block(item.value["mixer"], f"{key}.mixer", "mixer", d_model)
        channel = _block(item.value["channel"], f"{key}.channel", "channel", d_model) if "channel" in item.value else None
        layers.append(LayerSpec(mixer, channel))
    try:
        return Architecture(d_model, tuple(layers), vocab, tie)
    except ConstraintViolation as e:
        raise SpaceError(f, root.line, "layers", str(e)) from None


def _int(node: _yaml.Node, key: str) -> int:
    if isinstance(node.value, bool) or not isinstance(node.value, int) or node.value < 1:
        raise SpaceError(node.file, node.line, key, f"expected a positive integer, got {node.value!r}")
    return node.value


def _block(node: _yaml.Node, key: str, role: str, d_model: int) -> BlockSpec | None:
    value = node.plain()
    if value == NONE and role == "channel":
        return None
    if isinstance(value, str):
        value = {"block": value}
    if not isinstance(value, dict) or "block" not in value:
        raise SpaceError(node.file, node.line, key, "expected a block name or a mapping with 'block'")
    name = value.pop("block")
    if name not in REGISTRY or REGISTRY[name].role != role:
        options = [n for n, fam in REGISTRY.items() if fam.role == role] + ([NONE] if role == "channel" else [])
        raise SpaceError(node.file, node.line, key, f"unknown {role} block {name!r}; expected one of {', '.join(options)}")
    try:
        return BlockSpec.make(name, value, d_model)
    except KeyError as e:
        raise SpaceError(node.file, node.line, f"{key}.{e.args[0]}", f"{name} has no such parameter") from None
    except ValueError as e:
        raise SpaceError(node.file, node.line, f"{key}.{e.args[0]}", e.args[1]) from None
