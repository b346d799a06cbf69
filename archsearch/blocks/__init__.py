"""The block families, one file each, in one registry: adding a family is one file and one line here.

The plugin contract is exported here: a plugin subclasses `BlockFamily` (declaring its `Param`s), builds a `Block`
module (with the shared layers `RMSNorm`, `ShortConv`, `rotary` where they fit) and calls `register`.
"""

from __future__ import annotations

import importlib

from ..errors import ArchsearchError
from ._family import BlockFamily, Param, Params, fft_conv_flops, heads_divide, mean_causal_keys
from ._layers import Block, RMSNorm, ShortConv, rotary

REGISTRY: dict[str, BlockFamily] = {}

NONE = "none"  # an absent channel block


def register(family: BlockFamily) -> BlockFamily:
    """Make a family known by its name to spaces, architectures, the cost model and the model builder."""
    if family.name in REGISTRY or family.name == NONE:
        raise ArchsearchError(f"block family {family.name!r} is registered twice")
    REGISTRY[family.name] = family
    return family


# the built-in families, in the order they are listed everywhere: one file each in this folder, defining FAMILY
BUILTIN = ("attn", "swa", "deltanet", "h3", "hyena", "gau", "brt", "glu", "moe")
for _module in BUILTIN:
    register(importlib.import_module(f"{__name__}.{_module}").FAMILY)


def param_table(families: list[BlockFamily] | None = None) -> str:
    """The Markdown table of the families (the built-in ones unless given: plugins document themselves) and their
    parameters, from their declarations (docs/search-spaces.md)."""
    rows = ["| family | role | parameter | default | values | what it is |", "| --- | --- | --- | --- | --- | --- |"]
    for fam in families if families is not None else [REGISTRY[name] for name in BUILTIN]:
        for i, (name, p) in enumerate(fam.params.items()):
            head = f"`{fam.name}` ({fam.letter}) | {fam.role}" if i == 0 else " | "
            rows.append(f"| {head} | `{name}` | {_default(p)} | {_values(p)} | {p.doc} |")
    return "\n".join(rows) + "\n"


def _default(p: Param) -> str:
    if p.default is None:
        return "derived"
    if isinstance(p.default, bool):
        return str(p.default).lower()
    return f"{p.default:g}" if isinstance(p.default, float) else str(p.default)


def _values(p: Param) -> str:
    if p.options:
        return ", ".join(p.options)
    if p.kind is bool:
        return "true, false"
    low = "" if p.min is None else f"{p.min:g}"
    high = "" if p.max is None else f"{p.max:g}"
    kind = p.kind.__name__
    return f"{kind} {low}..{high}" if low or high else kind


__all__ = [
    "BUILTIN", "NONE", "REGISTRY", "Block", "BlockFamily", "Param", "Params", "RMSNorm", "ShortConv",
    "fft_conv_flops", "heads_divide", "mean_causal_keys", "param_table", "register", "rotary",
]
