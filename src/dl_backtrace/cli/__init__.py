"""Command line: ``dlbacktrace demo | explain | coverage | generate | serve``. Thin: parse, call, print.
User errors (bad arguments, missing files, unsupported models) are one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import DLBacktraceError
from .commands import add_commands
from .demo import add_demo

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2, no traceback
        sys.stderr.write(f"dlbacktrace: error: {message} (see dlbacktrace --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dlbacktrace", description="Explain PyTorch models by relevance propagation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    add_demo(sub)
    add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (DLBacktraceError, ValueError, TypeError, FileNotFoundError, ImportError, OSError) as e:
        return _fail(_first_line(e))
    except Exception as e:  # the command-line boundary: user code (a factory, a module) can raise anything
        if args.verbose:
            raise
        return _fail(f"{type(e).__name__}: {_first_line(e)} (run with -v for the traceback)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:500] if text else type(e).__name__


def _fail(message: str) -> int:
    sys.stderr.write(f"dlbacktrace: error: {message}\n")
    return 2
