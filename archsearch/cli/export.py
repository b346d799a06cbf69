"""`archsearch export`: hand a trial's architecture to a trainer (normal-form YAML, transformers, fla)."""

from __future__ import annotations

import argparse

from ..export import EXPORTERS, export, ok_row, pick_trial, trial_architecture, weights_file
from ..metrics import format_metric, human
from ..study import load_run


def add_parser(sub) -> None:
    e = sub.add_parser("export", help="hand a trial's architecture to a trainer: normal-form YAML, a transformers directory or an fla config")
    e.add_argument("run", help="run directory (the --out of archsearch run)")
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="this trial (it must have finished ok)")
    which.add_argument("--pick", metavar="knee|best:METRIC", help="the front's knee, or the ok trial best on METRIC")
    e.add_argument("--to", required=True, choices=tuple(EXPORTERS), help="yaml (normal form), hf (transformers) or fla (fla's DeltaNet config)")
    e.add_argument("--out", required=True, metavar="DIR", help="output directory")
    e.add_argument("--trust-plugins", action="store_true", help="import the plugins the run's study lists (runs their code)")
    e.add_argument("--weights", action="store_true", help="also write the trial's proxy weights (the run must have saved them)")


def run(args: argparse.Namespace) -> int:
    return export_trial(args.run, trial=args.trial, pick=args.pick, to=args.to, out=args.out, weights=args.weights,
                        trust_plugins=args.trust_plugins)


def export_trial(path: str, trial: int | None = None, pick: str | None = None, to: str = "yaml", out: str = ".",
                 weights: bool = False, trust_plugins: bool = False) -> int:
    """Choose the trial, write it, say what was written and how to load it."""
    run = load_run(path, require_trials=True, trust_plugins=trust_plugins)
    number, why = pick_trial(run, trial, pick)
    arch = trial_architecture(run, number)
    written = export(run, number, to, out, weights)
    print(f"trial {number}: {arch.summary()} ({arch.digest}), {why}")
    row = ok_row(run, number)
    metrics = [o.metric for o in run.study.objectives if o.metric in row]
    if metrics:
        print("  " + ", ".join(f"{m}={format_metric(m, row[m])}" for m in metrics))
    for file in written:
        print(f"wrote {file}")
    if to == "yaml":
        print(f"load: archsearch.build_model(archsearch.Architecture.load({str(written[0])!r}))")
    elif to == "hf":
        source = f"proxy weights of {weights_file(run, number).name}" if weights else "a fresh initialisation (seed 0); --weights for the proxy's"
        print(f"model.safetensors: {source} ({human(arch.cost().params)} parameters)")
        print(f"load: AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)")
    else:
        print(f"load: fla.models.DeltaNetForCausalLM(fla.models.DeltaNetConfig.from_pretrained({str(out)!r}))")
    return 0
