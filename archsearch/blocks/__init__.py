"""The block families, one file each, in one registry: adding a family is one file and one line here."""

from __future__ import annotations

from ..errors import ArchsearchError
from ._family import BlockFamily, Param
from .attn import FAMILY as attn
from .brt import FAMILY as brt
from .deltanet import FAMILY as deltanet
from .gau import FAMILY as gau
from .glu import FAMILY as glu
from .h3 import FAMILY as h3
from .hyena import FAMILY as hyena
from .moe import FAMILY as moe
from .swa import FAMILY as swa

REGISTRY: dict[str, BlockFamily] = {}

NONE = "none"  # an absent channel block


def register(family: BlockFamily) -> BlockFamily:
    """Make a family known by its name to spaces, architectures, the cost model and the model builder."""
    if family.name in REGISTRY or family.name == NONE:
        raise ArchsearchError(f"block family {family.name!r} is registered twice")
    REGISTRY[family.name] = family
    return family


for _family in (attn, swa, deltanet, h3, hyena, gau, brt, glu, moe):
    register(_family)


def family(name: str) -> BlockFamily:
    return REGISTRY[name]


def names(role: str) -> list[str]:
    """Registered families of a role ("mixer" or "channel"), in registration order."""
    return [n for n, f in REGISTRY.items() if f.role == role]


__all__ = ["REGISTRY", "NONE", "BlockFamily", "Param", "register", "family", "names"]
