"""`archsearch run`: run or resume a study."""

from __future__ import annotations

import argparse

from .. import study
from ..errors import ArchsearchError
from ._args import positive


def add_parser(sub) -> None:
    r = sub.add_parser("run", help="run or resume a study: Ray Tune trains proxies, Optuna chooses them")
    r.add_argument("study", help="study YAML file")
    r.add_argument("--out", help="run directory (default: the study's out, else runs/NAME); an existing one is resumed")
    r.add_argument("--address", help="join this Ray cluster (default: start Ray on this machine)")
    r.add_argument("--trials", type=positive, help="number of trials (default: the study's)")


def run(args: argparse.Namespace) -> int:
    try:
        study.run(args.study, out=args.out, address=args.address, trials=args.trials)
    except OSError as e:  # disk full, a read-only folder: what was written stays (every write is atomic)
        where = f"{e.filename}: " if e.filename else ""
        raise ArchsearchError(f"{where}cannot write ({e.strerror or e}); every trial finished before is kept: fix it and run again to resume") from None
    return 0
