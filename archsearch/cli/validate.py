"""`archsearch validate`: does the study's proxy rank architectures as F times its budget would?"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..blocks import REGISTRY
from ..study import RunDir, Study
from ..validate import (
    DEFAULT_ARCHS,
    DEFAULT_FACTOR,
    DEFAULT_TOP_K,
    ValidationError,
    describe,
    draw_architectures,
    open_run_dir,
    run_architectures,
    validate,
)
from ._args import positive


def add_parser(sub) -> None:
    v = sub.add_parser("validate", help="train N architectures at the proxy's budget and at F times it; Kendall tau, Spearman rho, top-k overlap")
    v.add_argument("study", help="study YAML file")
    v.add_argument("--archs", type=_archs, default=DEFAULT_ARCHS, metavar="N", help=f"architectures to train (default {DEFAULT_ARCHS}, at least 3)")
    v.add_argument("--factor", type=_factor, default=DEFAULT_FACTOR, metavar="F", help=f"the long runs' budget as a multiple of the proxy's (default {DEFAULT_FACTOR:g})")
    v.add_argument("--from-run", metavar="RUN", help="validate on this finished run's ok trials (and write validation.json there) instead of drawing from the space")
    v.add_argument("--out", help="run directory without --from-run (default: the study's out, else runs/NAME)")
    v.add_argument("--seed", type=int, default=0, help="seed of the architectures drawn from the space (default 0)")
    v.add_argument("--top-k", type=positive, default=DEFAULT_TOP_K, metavar="K", help=f"size of the top-k overlap (default {DEFAULT_TOP_K})")
    v.add_argument("--long-repeats", type=_long_repeats, default=1, metavar="M",
                   help=f"seeds per long run (default 1, at most {MAX_LONG_REPEATS}): the reference is their mean, and the report says how well they rank against each other")
    v.add_argument("--reuse", action="append", default=[], metavar="RUN",
                   help="copy the trainings another validation's run directory recorded with the same architecture and settings instead of training them "
                        "again (repeatable): proxies of several budgets against one set of long runs")
    v.add_argument("--retrain", action="append", default=[], metavar="FAMILY",
                   help="with --reuse: train again, rather than copy, the architectures holding a block of this family (repeatable): records "
                        "made before a fix to that family")
    v.add_argument("--jobs", type=positive, default=1, metavar="J", help="trainings at once, each in its own process (default 1; small proxies leave a GPU mostly idle)")


def _archs(text: str) -> int:
    value = positive(text)
    if value < 3:
        raise argparse.ArgumentTypeError(f"expected at least 3 (a ranking of fewer says nothing), got {text!r}")
    return value


MAX_LONG_REPEATS = 8  # each seed is a whole long run per architecture


def _long_repeats(text: str) -> int:
    value = positive(text)
    if value > MAX_LONG_REPEATS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_LONG_REPEATS} seeds per long run, got {text!r}")
    return value


def _factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number greater than 1, got {text!r}") from None
    if not value > 1:
        raise argparse.ArgumentTypeError(f"expected a number greater than 1, got {text!r}")
    return value


def _recorded_validation(path: str) -> RunDir:
    run_dir = RunDir(Path(path).resolve())
    if not run_dir.validation_records_file.is_file():
        raise ValidationError(f"--reuse: {path}: no {run_dir.validation_records_file.name} there; expected a run directory archsearch validate trained in")
    return run_dir


def run(args: argparse.Namespace) -> int:
    study = Study.load(args.study)
    reuse = [_recorded_validation(path) for path in args.reuse]  # before a run directory is made for a bad flag
    if args.retrain and not args.reuse:
        raise ValidationError("--retrain: only with --reuse (without it every training is new)")
    if unknown := sorted(set(args.retrain) - set(REGISTRY)):
        raise ValidationError(f"--retrain: unknown block family {unknown[0]!r}; expected one of {', '.join(sorted(REGISTRY))}")
    if args.from_run is not None:
        if args.out is not None:
            raise ValidationError("--out: not with --from-run (the validation is written into that run's directory)")
        run_dir = open_run_dir(study, args.from_run, existing=True)
        archs = run_architectures(run_dir.path, args.archs)
    else:
        run_dir = open_run_dir(study, args.out)
        archs = draw_architectures(study, args.archs, args.seed)
    if len(archs) < args.archs:
        print(f"only {len(archs)} distinct architectures {'among the ok trials' if args.from_run else 'meet the constraints'}: validating on those")
    report = validate(study, run_dir, archs, args.factor, args.top_k, jobs=args.jobs, long_repeats=args.long_repeats, reuse=reuse,
                      retrain=args.retrain)
    print("\n".join(describe(report)))
    print(f"written: {run_dir.validation_file}")
    return 0
