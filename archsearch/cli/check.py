"""`archsearch check`: validate a space, list its parameters, size it, and show sampled architectures with costs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..architecture import Architecture
from ..errors import ArchsearchError
from ..loading import load_space
from ..metrics import COST_METRICS, format_metric, human, human_bytes
from ..sampling import Infeasible, RandomSampler, sample, space_size
from ..space import parameters
from ._args import positive


def add_parser(sub) -> None:
    c = sub.add_parser("check", help="validate a search space, size it, and show sample architectures with their cost")
    c.add_argument("space", help="search-space YAML file")
    c.add_argument("--samples", type=positive, default=8, help="architectures to draw (default 8)")
    c.add_argument("--seed", type=int, default=0, help="random seed of the draws (default 0)")
    c.add_argument("--context", type=positive, default=None, help="context for FLOPs and state (default: the space's)")
    c.add_argument("--plugin", action="append", default=[], metavar="FILE|MODULE",
                   help="import this plugin first (a Python file or module that registers block families; runs its code); repeatable")


def run(args: argparse.Namespace) -> int:
    for plugin in args.plugin:
        _import(plugin)
    return check(args.space, samples=args.samples, seed=args.seed, context=args.context)


def _import(plugin: str) -> None:
    from ..study import import_plugins

    if plugin.endswith(".py") and not Path(plugin).is_file():
        raise ArchsearchError(f"--plugin {plugin}: no such file")
    try:
        import_plugins((str(Path(plugin).resolve()) if plugin.endswith(".py") else plugin,))
    except SyntaxError as e:
        raise ArchsearchError(f"{e.filename}:{e.lineno}: --plugin: {e.msg}") from None
    except Exception as e:  # a plugin is someone's code: whatever it raises is one line
        raise ArchsearchError(f"--plugin {plugin}: cannot import it ({type(e).__name__}: {str(e)[:200]})") from None


def check(path: str, samples: int = 8, seed: int = 0, context: int | None = None) -> int:
    space = load_space(path)
    context = context or space.constraints.context
    dtype_bytes = space.constraints.dtype_bytes
    print(f"space {space.name} ({path}): valid")
    params = parameters(space)
    print(f"\nsearched parameters ({len(params)}):")
    width = max((len(k) for k, _ in params), default=0)
    for key, domain in params:
        print(f"  {key:<{width}}  {domain}")
    print(f"\nsize: {space_size(space).describe()}")
    if space.constraints.bounds:
        print("constraints: " + ", ".join(_bound(b) for b in space.constraints.bounds) + f" (at context {space.constraints.context})")

    print(f"\n{samples} sampled architectures (seed {seed}; FLOPs and state at context {context}):")
    rows, feasible = [], []
    sampler = RandomSampler(seed)
    for i in range(samples):
        try:
            arch = sample(space, sampler)
        except Infeasible as e:
            rows.append((str(i), "infeasible", "", "", "", "", str(e)))
            continue
        cost = arch.cost(context, dtype_bytes)
        broken = space.constraints.violations(arch)
        if not broken:
            feasible.append(arch)
        rows.append((str(i), _shape(arch), human(cost.params), human(cost.active_params),
                     f"{cost.flops_per_token / 1e6:.1f}", human_bytes(cost.state_bytes), "; ".join(broken) or arch.digest))
    header = ("#", "architecture", "params", "active", "MFLOP/tok", "state", "digest / violated")
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    for r in [header, *rows]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())

    if feasible:
        costs = [a.cost(context, dtype_bytes) for a in feasible]
        print(f"\ncost ranges over the {len(feasible)} feasible samples:")
        for m in COST_METRICS:
            values = [getattr(c, m.name) for c in costs]
            print(f"  {m.name:<16} {m.format(min(values))} .. {m.format(max(values))}")
    else:
        print("\nno sampled architecture meets the constraints")
    return 0


def _shape(arch: Architecture) -> str:
    return arch.summary().rsplit(" ", 1)[0]


def _bound(b) -> str:
    parts = [f">= {format_metric(b.metric, b.low)}" if b.low is not None else "", f"<= {format_metric(b.metric, b.high)}" if b.high is not None else ""]
    return f"{b.metric} " + " and ".join(p for p in parts if p)
