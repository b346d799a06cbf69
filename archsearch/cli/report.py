"""`archsearch report`: a run as one self-contained HTML page (front, hypervolume, learning curves, importances)."""

from __future__ import annotations

import argparse

from ..report import write_report
from ..study import load_run


def add_parser(sub) -> None:
    r = sub.add_parser("report", help="one self-contained HTML page of a run: front, hypervolume, learning curves, parameter importances")
    r.add_argument("run", help="run directory (the --out of archsearch run)")
    r.add_argument("--out", metavar="FILE.html", help="where to write the page (default: RUN/report.html)")


def run(args: argparse.Namespace) -> int:
    run_ = load_run(args.run, require_trials=True)
    out = write_report(run_, args.out or run_.path / "report.html")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB, opens offline)")
    return 0
