"""`archsearch export`: hand a trial's architecture to a trainer (normal-form YAML, transformers, fla)."""

from __future__ import annotations

import argparse

from ..export import (
    EXPORTERS,
    export,
    ok_row,
    parse_scale,
    pick_trial,
    scale_architecture,
    trial_architecture,
    weights_file,
)
from ..metrics import format_metric, human, human_bytes
from ..study import load_run


def add_parser(sub) -> None:
    e = sub.add_parser("export", help="hand a trial's architecture to a trainer: normal-form YAML, a transformers directory or an fla config")
    e.add_argument("run", help="run directory (the --out of archsearch run)")
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="this trial (it must have finished ok)")
    which.add_argument("--pick", metavar="knee|best:METRIC", help="the front's knee, or the ok trial best on METRIC")
    e.add_argument("--to", required=True, choices=tuple(EXPORTERS), help="yaml (normal form), hf (transformers, self-contained) or fla (fla's DeltaNet config and parameter names)")
    e.add_argument("--out", required=True, metavar="DIR", help="output directory")
    e.add_argument("--trust-plugins", action="store_true", help="import the plugins the run's study lists (runs their code)")
    e.add_argument("--weights", action="store_true", help="also write the trial's proxy weights (the run must have saved them)")
    e.add_argument("--scale", metavar="d_model=N,n_layers=N",
                   help="export the architecture at this width and/or depth, keeping its pattern (docs/export.md)")


def run(args: argparse.Namespace) -> int:
    return export_trial(args.run, trial=args.trial, pick=args.pick, to=args.to, out=args.out, weights=args.weights,
                        scale=args.scale, trust_plugins=args.trust_plugins)


def export_trial(path: str, trial: int | None = None, pick: str | None = None, to: str = "yaml", out: str = ".",
                 weights: bool = False, scale: str | None = None, trust_plugins: bool = False) -> int:
    """Choose the trial, write it, say what was written and how to load it."""
    sizes = parse_scale(scale) if scale is not None else None
    run = load_run(path, require_trials=True, trust_plugins=trust_plugins)
    number, why = pick_trial(run, trial, pick)
    arch = trial_architecture(run, number)
    written = export(run, number, to, out, weights, sizes)
    print(f"trial {number}: {arch.summary()} ({arch.digest}), {why}")
    row = ok_row(run, number)
    metrics = [o.metric for o in run.study.objectives if o.metric in row]
    if metrics:
        print("  " + ", ".join(f"{m}={format_metric(m, row[m])}" for m in metrics))
    if sizes:
        arch = scale_architecture(arch, **sizes)
        cost = arch.cost()
        print(f"scaled to {scale}: {arch.summary()} ({arch.digest})")
        print(f"  params={human(cost.params)} flops_per_token={human(cost.flops_per_token)} "
              f"state_bytes={human_bytes(cost.state_bytes)} (at context {cost.context})")
    for file in written:
        print(f"wrote {file}")
    if to == "yaml":
        print(f"load: archsearch.build_model(archsearch.Architecture.load({str(written[0])!r}))")
    elif to == "hf":
        source = f"proxy weights of {weights_file(run, number).name}" if weights else "a fresh initialisation (seed 0); --weights for the proxy's"
        print(f"model.safetensors: {source} ({human(arch.cost().params)} parameters)")
        print(f"load: AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True) "
              "(transformers and torch alone; archsearch's model code is bundled in the directory)")
    else:
        print(f"load: fla.models.DeltaNetForCausalLM(fla.models.DeltaNetConfig.from_pretrained({str(out)!r}))")
        if weights:
            print(f"weights: model.load_state_dict(safetensors.torch.load_file({str(out)!r} + '/model.safetensors'))")
    return 0
