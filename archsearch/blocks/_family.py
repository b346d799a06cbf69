"""What every block family declares: its parameters, its validity rules, its cost model and its module.

A family is one file in this folder; registering an instance in `archsearch.blocks` is all it takes to make
the family usable in search spaces, architectures, the cost model and the language model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

Params = Mapping[str, Any]
INT_MAX = 1 << 20  # the cap of an integer block parameter that declares no max (windows, heads, experts, chunks...)


@dataclass(frozen=True)
class Param:
    """One parameter of a block family: its type, default and the values it accepts."""

    kind: type  # int, float, bool or str
    default: Any  # None: derived from the other parameters by BlockFamily.resolve
    min: float | None = None
    max: float | None = None  # an int parameter without one is capped at INT_MAX
    options: tuple[str, ...] | None = None
    doc: str = ""
    # left out of an architecture's normal form (and so of its digest) at its default: a parameter added after
    # digests were recorded (committed tables, run directories) keeps the earlier architectures' digests
    omit_default: bool = False

    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable, or None when it is."""
        if self.kind is bool:
            return None if isinstance(value, bool) else "expected true or false"
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            return f"expected an integer, got {value!r}"
        if self.kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            return f"expected a number, got {value!r}"
        if self.kind is str:
            if not isinstance(value, str):
                return f"expected one of {', '.join(self.options or ())}, got {value!r}"
            if self.options and value not in self.options:
                return f"expected one of {', '.join(self.options)}, got {value!r}"
            return None
        if self.kind is float and not math.isfinite(value):
            return f"expected a finite number, got {value!r}"
        if self.min is not None and value < self.min:
            return f"expected at least {_fmt(self.min)}, got {value!r}"
        top = INT_MAX if self.max is None and self.kind is int else self.max
        if top is not None and value > top:
            return f"expected at most {_fmt(top)}, got {value!r}"
        return None

    def normalise(self, value: Any) -> Any:
        """The canonical Python value (2 and 2.0 are one float parameter), so equal specs hash equal."""
        return float(value) if self.kind is float else value


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


class BlockFamily:
    """Base of the block families. Subclasses set the class attributes and override the cost methods.

    Cost conventions (shared by every family, so architectures compare fairly):
    - parameters: every trainable scalar of the module `build` returns; the layer's pre-norm is not counted here.
    - FLOPs: forward pass, per token, averaged over a sequence of `context` tokens; a multiply-add is 2 FLOPs;
      matrix products, attention scores, convolutions and state updates count; norms and elementwise ops do not.
    - state bytes: what decoding keeps per sequence after `context` tokens: KV and convolution caches at
      `dtype_bytes` per element, recurrent states as the block stores them (float32 where precision needs it).
    """

    name: ClassVar[str]
    role: ClassVar[str]  # "mixer" or "channel"
    letter: ClassVar[str]  # one character in architecture summaries
    params: ClassVar[dict[str, Param]]
    doc: ClassVar[str] = ""

    def resolve(self, params: dict[str, Any], d_model: int) -> dict[str, Any]:
        """Fill derived defaults (those declared as None) from the other parameters. Override where needed."""
        return params

    def violations(self, p: Params, d_model: int) -> list[tuple[str, str]]:
        """Rules a concrete block must satisfy beyond each parameter's own range: (parameter, message) pairs."""
        return []

    def param_count(self, p: Params, d_model: int) -> int:
        raise NotImplementedError

    def active_param_count(self, p: Params, d_model: int) -> int:
        """Parameters one token goes through; all of them unless the family routes tokens (mixture of experts)."""
        return self.param_count(p, d_model)

    def flops_per_token(self, p: Params, d_model: int, context: int) -> float:
        raise NotImplementedError

    def state_bytes(self, p: Params, d_model: int, context: int, dtype_bytes: int) -> int:
        return 0

    def build(self, p: Params, d_model: int):  # -> torch.nn.Module
        raise NotImplementedError(f"block family {self.name!r} has no module yet")


def heads_divide(d_model: int, heads: int, key: str = "heads") -> list[tuple[str, str]]:
    """The rule shared by every multi-head family: heads split d_model into equal head dimensions."""
    if d_model % heads:
        return [(key, f"{heads} must divide d_model {d_model}")]
    return []


def mean_causal_keys(context: int, window: int | None = None) -> float:
    """How many keys a token attends to on average over a causal sequence of `context` tokens."""
    t, w = context, window or context
    if t <= w:
        return (t + 1) / 2
    return (w * (w + 1) / 2 + (t - w) * w) / t


def fft_conv_flops(context: int) -> float:
    """FLOPs per token and channel of a causal FFT convolution (input and kernel transforms at length 2T, product, inverse)."""
    n = 2 * context
    return (3 * 2.5 * n * math.log2(n) + 6 * (context + 1)) / context
