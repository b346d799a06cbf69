"""One concrete hybrid in normal form (an explicit list of layers, every parameter resolved) and its cost model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import yaml

from . import _yaml
from ._config import fail, positive_int, read_fields, read_file, read_text
from ._metric import human, metric
from .blocks import NONE, REGISTRY, BlockFamily
from .errors import ConstraintViolation

# Size caps, checked where a space or architecture is read (a range's high end before any draw): past them a model
# cannot be built or costed in reasonable memory and time, and a typo (an extra zero or three) would hang instead.
MAX_D_MODEL = 65_536
MAX_LAYERS = 1_024  # n_layers, `MIXER+CHANNEL x N` and repeat groups, all together
MAX_VOCAB = 1 << 21
MAX_CONTEXT = 1 << 20  # constraints.context and proxy.seq_len


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
        decl = self.fam.params
        return {"block": self.family, **{k: v for k, v in self.params if not (decl[k].omit_default and v == decl[k].default)}}

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

    params: int = field(metadata=metric("minimize", "count", "parameters, embeddings included"))
    active_params: int = field(metadata=metric("minimize", "count", "parameters one token goes through (fewer than params with mixture of experts)"))
    flops_per_token: float = field(metadata=metric("minimize", "flops", "forward FLOPs per token, averaged over the context"))
    state_bytes: int = field(metadata=metric("minimize", "bytes", "decode state bytes after the context"))
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

    def families(self) -> set[str]:
        """The block families its layers hold, mixers and channels."""
        return {spec.family for layer in self.layers for spec in (layer.mixer, layer.channel) if spec is not None}

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
                active += fam.active_param_count(p, d)
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
        return _from_node(read_text(text, file))

    from_json = from_yaml  # JSON is YAML

    @classmethod
    def load(cls, path: str) -> Architecture:
        return _from_node(read_file(path))


def _from_node(root: _yaml.Node) -> Architecture:
    def deferred(node: _yaml.Node, key: str) -> _yaml.Node:
        return node  # the blocks are read once d_model is known

    kwargs = read_fields(Architecture, root, "", noun="key",
                         parsers={"d_model": _capped(MAX_D_MODEL), "vocab_size": _capped(MAX_VOCAB), "layers": deferred})
    d_model, layers_node = kwargs["d_model"], kwargs["layers"]
    if not isinstance(layers_node.value, list) or not layers_node.value:
        raise fail(layers_node, "layers", "expected a non-empty list of {mixer, channel}")
    if len(layers_node.value) > MAX_LAYERS:
        raise fail(layers_node, "layers", f"{len(layers_node.value)} layers; expected at most {MAX_LAYERS:,}")
    parsers = {"mixer": lambda n, k: _block(n, k, "mixer", d_model), "channel": lambda n, k: _block(n, k, "channel", d_model)}
    kwargs["layers"] = tuple(LayerSpec(**read_fields(LayerSpec, item, f"layers[{i}]", noun="key", parsers=parsers))
                             for i, item in enumerate(layers_node.value))
    try:
        return Architecture(**kwargs)
    except ConstraintViolation as e:
        raise fail(root, "layers", str(e)) from None


def _capped(cap: int):
    def parse(node: _yaml.Node, key: str) -> int:
        value = positive_int(node, key)
        if value > cap:
            raise fail(node, key, f"expected a positive integer of at most {cap:,}, got {value:,}")
        return value

    return parse


def _block(node: _yaml.Node, key: str, role: str, d_model: int) -> BlockSpec | None:
    value = node.plain()
    if value == NONE and role == "channel":
        return None
    if isinstance(value, str):
        value = {"block": value}
    if not isinstance(value, dict) or "block" not in value:
        raise fail(node, key, "expected a block name or a mapping with 'block'")
    name = value.pop("block")
    if not isinstance(name, str) or name not in REGISTRY or REGISTRY[name].role != role:
        options = [n for n, fam in REGISTRY.items() if fam.role == role] + ([NONE] if role == "channel" else [])
        raise fail(node, key, f"unknown {role} block {name!r}; expected one of {', '.join(options)}")
    try:
        return BlockSpec.make(name, value, d_model)
    except KeyError as e:
        raise fail(node, f"{key}.{e.args[0]}", f"{name} has no such parameter") from None
    except ValueError as e:
        raise fail(node, f"{key}.{e.args[0]}", e.args[1]) from None
