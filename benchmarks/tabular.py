"""The tabular benchmark of the search itself (NAS-Bench style): train every architecture of a small finite space
once, then replay each sampler on the table, over many seeds, on CPU.

    # GPU: one proxy run per architecture of search_spaces/tabular.yaml (68), resumable: done rows are kept
    PYTHONUNBUFFERED=1 python benchmarks/tabular.py --build --jobs 8 --out benchmarks/tabular.h200.csv

    # CPU: every sampler over 20 seeds; trials to 95% of the true front's hypervolume, and the curves as a plot
    python benchmarks/tabular.py --replay benchmarks/tabular.h100.csv --plot benchmarks/tabular.h100.png
    python benchmarks/tabular.py --replay T.csv --samplers nsga2,nsga2:population_size=8,tpe,random

The table's header records the device, date, command and settings; `archsearch.study.Table` reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from archsearch import Architecture
from archsearch.metrics import cost_values
from archsearch.sampling import enumerate_space
from archsearch.study import Study, Table, plot_replays, replay_all, summarise
from archsearch.validate import train_parallel

STUDY = Path(__file__).with_name("tabular_study.yaml")


def architectures(study: Study) -> list[Architecture]:
    """The space's distinct feasible architectures, in enumeration order."""
    out: dict[str, Architecture] = {}
    for arch in enumerate_space(study.space):
        if isinstance(arch, Architecture) and not study.violations(arch):
            out.setdefault(arch.digest, arch)
    return list(out.values())


def build(study: Study, out: Path, limit: int | None, jobs: int = 1) -> None:
    """Train each architecture once, `jobs` at a time (each in its own process; throughput is timed under the
    exclusive device lock all the same); the table is rewritten after each, so an interrupted build resumes."""
    settings = study.proxy
    table = Table.read(out) if out.exists() else Table({}, {})
    archs = architectures(study)[:limit]
    rows = dict(table.rows)
    todo = [a for a in archs if not (a.digest in rows and rows[a.digest].get("status") == "ok")]
    for done, (i, result) in enumerate(train_parallel([(a, settings) for a in todo], jobs, study.plugins, progress=False), 1):
        arch = todo[i]
        result = {k: v for k, v in result.items() if k != "history"}
        rows[arch.digest] = {"digest": arch.digest, "summary": arch.summary(), "arch": json.dumps(json.loads(arch.to_json())),
                             **result, **cost_values(arch.cost(study.constraints.context, study.constraints.dtype_bytes))}
        header = {"device": result.get("device", ""), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                  "command": shlex.join([sys.executable, *sys.argv]), "study": str(STUDY.name),
                  "space": study.space.name, "architectures": str(len(archs)),
                  "settings": json.dumps(dataclasses.asdict(settings), default=str, sort_keys=True)}
        Table(header, rows).write(out)
        print(f"[{done}/{len(todo)}] {arch.summary():28s} {result['status']:8s} "
              f"bpb {result.get('bits_per_byte')} tok/s {result.get('train_tokens_per_s')}", flush=True)


def parse_samplers(text: str) -> dict[str, tuple[str, dict]]:
    """`nsga2,nsga2:population_size=8;mutation_prob=0.2,tpe` -> label -> (sampler, settings)."""
    out = {}
    for spec in text.split(","):
        name, _, rest = spec.partition(":")
        settings = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in rest.split(";") if kv)}
        out[spec] = (name, settings)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", type=Path, default=STUDY, help="the study whose space, proxy and objectives define the table")
    ap.add_argument("--build", action="store_true", help="train every architecture of the space once")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/tabular.csv"), help="the table --build writes")
    ap.add_argument("--tokens", type=int, help="override the study's proxy token budget")
    ap.add_argument("--device", help="override the study's proxy device")
    ap.add_argument("--limit", type=int, help="build only the first N architectures (a smoke test)")
    ap.add_argument("--jobs", type=int, default=1, help="trainings at once while building, each in its own process")
    ap.add_argument("--replay", type=Path, metavar="TABLE", help="replay the samplers on this table")
    ap.add_argument("--samplers", default="nsga2,tpe,gp,random", help="samplers, each NAME or NAME:KEY=VALUE;KEY=VALUE")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--trials", type=int, help="trials per replay (default: the table's size)")
    ap.add_argument("--plot", type=Path, help="write the hypervolume curves here (PNG)")
    args = ap.parse_args()
    study = Study.load(args.study)
    overrides = {k: v for k, v in (("tokens", args.tokens), ("device", args.device)) if v is not None}
    if overrides:
        study = dataclasses.replace(study, proxy=dataclasses.replace(study.proxy, **overrides))
    if args.build:
        build(study, args.out, args.limit, args.jobs)
    if args.replay:
        table = Table.read(args.replay)
        trials = args.trials or len(table.rows)
        start = time.perf_counter()
        results = replay_all(study, table, parse_samplers(args.samplers), range(args.seeds), trials)
        print(f"table {args.replay} ({len(table.rows)} architectures, device {table.header.get('device', '?')}); "
              f"{args.seeds} seeds x {trials} trials; {time.perf_counter() - start:.0f} s")
        print("| sampler | trials to 95% hypervolume: median [q25, q75] | seeds that never reach it | final share |")
        print("| --- | --- | --- | --- |")
        for row in summarise(results):
            print(f"| {row['sampler']} | {row['median']:.0f} [{row['q25']:.0f}, {row['q75']:.0f}] | {row['missed']} of {row['seeds']} "
                  f"| {row['final']:.3f} |")
        if args.plot:
            title = f"{args.replay.name}: {len(table.rows)} architectures, {args.seeds} seeds"
            print(f"plot: {plot_replays(results, args.plot, title)}")


if __name__ == "__main__":
    main()
