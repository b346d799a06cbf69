"""`archsearch` on the command line: one subcommand per pipeline stage, one module each; bad input ends in one
line and exit code 2.

Each command module has `add_parser(subparsers)` (its flags) and `run(args) -> int` (what it does).
"""

from __future__ import annotations

import argparse
import sys

from ..errors import ArchsearchError
from . import check, export, front, report, run, train, validate

COMMANDS = {"check": check, "train": train, "run": run, "front": front, "export": export, "report": report,
            "validate": validate}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, like every other bad input
        sys.stderr.write(f"archsearch: {message} (see archsearch {self.prog.split()[-1]} --help)\n")
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="archsearch", description="Search hybrid language-model architectures.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in COMMANDS.values():
        module.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except ArchsearchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
