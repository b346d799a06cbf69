"""`archsearch check`: validate a space, list its parameters, size it, and show sampled architectures with costs."""

from __future__ import annotations

from .architecture import Architecture, human, human_bytes, human_metric
from .sampling import Infeasible, RandomSampler, sample, space_size
from .space import SearchSpace, parameters


def run(path: str, samples: int = 8, seed: int = 0, context: int | None = None) -> int:
    space = SearchSpace.load(path)
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
        broken = space.constraint_violations(arch)
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
        for name, fmt in (("params", human), ("active_params", human), ("flops_per_token", human), ("state_bytes", human_bytes)):
            values = [getattr(c, name) for c in costs]
            print(f"  {name:<16} {fmt(min(values))} .. {fmt(max(values))}")
    else:
        print("\nno sampled architecture meets the constraints")
    return 0


def _shape(arch: Architecture) -> str:
    return arch.summary().rsplit(" ", 1)[0]


def _bound(b) -> str:
    parts = [f">= {human_metric(b.metric, b.low)}" if b.low is not None else "", f"<= {human_metric(b.metric, b.high)}" if b.high is not None else ""]
    return f"{b.metric} " + " and ".join(p for p in parts if p)
