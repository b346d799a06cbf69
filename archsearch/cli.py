"""`archsearch` on the command line: one subcommand per pipeline stage; bad input ends in one line and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import ArchsearchError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.removeprefix("cmd_")] = fn
    return fn


@command
def cmd_check(args: argparse.Namespace) -> int:
    from . import _check

    return _check.run(args.space, samples=args.samples, seed=args.seed, context=args.context)


@command
def cmd_train(args: argparse.Namespace) -> int:
    from . import _train_cli

    return _train_cli.run(args)


@command
def cmd_run(args: argparse.Namespace) -> int:
    from . import _runner

    _runner.run(args.study, out=args.out, address=args.address, trials=args.trials)
    return 0


@command
def cmd_front(args: argparse.Namespace) -> int:
    from . import front

    return front.run_cli(args.run, chosen=args.objectives, plot=args.plot, compare=args.compare, reference=args.reference)


@command
def cmd_export(args: argparse.Namespace) -> int:
    from . import export

    return export.run_cli(args.run, trial=args.trial, pick=args.pick, to=args.to, out=args.out, weights=args.weights)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, like every other bad input
        sys.stderr.write(f"archsearch: {message} (see archsearch {self.prog.split()[-1]} --help)\n")
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="archsearch", description="Search hybrid language-model architectures.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="validate a search space, size it, and show sample architectures with their cost")
    c.add_argument("space", help="search-space YAML file")
    c.add_argument("--samples", type=_positive, default=8, help="architectures to draw (default 8)")
    c.add_argument("--seed", type=int, default=0, help="random seed of the draws (default 0)")
    c.add_argument("--context", type=_positive, default=None, help="context for FLOPs and state (default: the space's)")
    t = sub.add_parser("train", help="train one architecture as a proxy and print perplexity and tokens/s")
    t.add_argument("arch", help="architecture YAML (normal form), or a search space with --sample SEED")
    t.add_argument("--sample", type=int, metavar="SEED", help="treat ARCH as a search space and train the architecture this seed draws")
    t.add_argument("--task", default="lm", help="lm (default), mqar, selective_copy or induction")
    t.add_argument("--data", default="builtin", help="builtin (default), a text file or folder, a train.bin/val.bin folder, or a saved HF dataset")
    t.add_argument("--tokenizer", help="tokenizer.json (default: bytes)")
    t.add_argument("--tokens", type=_positive, default=1_000_000, help="training budget in tokens (default 1M)")
    t.add_argument("--seconds", type=float, help="wall-clock budget as well")
    t.add_argument("--seq-len", type=_positive, default=256)
    t.add_argument("--batch-size", type=_positive, default=16)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--inference", action="store_true", help="also measure prefill and decode tokens/s")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    r = sub.add_parser("run", help="run or resume a study: Ray Tune trains proxies, Optuna chooses them")
    r.add_argument("study", help="study YAML file")
    r.add_argument("--out", help="run directory (default: the study's out, else runs/NAME); an existing one is resumed")
    r.add_argument("--address", help="join this Ray cluster (default: start Ray on this machine)")
    r.add_argument("--trials", type=_positive, help="number of trials (default: the study's)")
    f = sub.add_parser("front", help="the Pareto front of a run: table, hypervolume, knee, PNG/HTML plot")
    f.add_argument("run", help="run directory (the --out of archsearch run)")
    f.add_argument("--objectives", metavar="A,B", help="metrics to trade off (default: the study's); METRIC:min|max overrides a direction")
    f.add_argument("--plot", metavar="FILE", help="write a plot: FILE.png (matplotlib) or FILE.html (plotly)")
    f.add_argument("--compare", metavar="RUN2", help="overlay a second run; hypervolumes at a shared reference point")
    f.add_argument("--reference", metavar="X,Y", help="hypervolume reference point, one number per objective (default: the worst values pushed 10%% of their range out); negative numbers as --reference=-1,5")
    e = sub.add_parser("export", help="hand a trial's architecture to a trainer: normal-form YAML, a transformers directory or an fla config")
    e.add_argument("run", help="run directory (the --out of archsearch run)")
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="this trial (it must have finished ok)")
    which.add_argument("--pick", metavar="knee|best:METRIC", help="the front's knee, or the ok trial best on METRIC")
    e.add_argument("--to", required=True, choices=("yaml", "hf", "fla"), help="yaml (normal form), hf (transformers) or fla (fla's DeltaNet config)")
    e.add_argument("--out", required=True, metavar="DIR", help="output directory")
    e.add_argument("--weights", action="store_true", help="also write the trial's proxy weights (the run must have saved them)")
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ArchsearchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
