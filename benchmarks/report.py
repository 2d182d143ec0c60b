"""What every benchmark does with its markdown table: print it, and write it where ``--out`` says."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def command_line(script: str, argv: list[str] | None = None) -> str:
    """This run's command line (``script`` is the benchmark's path from the repository root; ``argv`` its
    arguments, default ``sys.argv[1:]``), quoted so that it can be pasted back."""
    return f".venv/bin/python {script} {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip()


def parse_keeping_argv(parser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, with ``argv`` kept as ``args.argv`` for :func:`command_line`: a report then
    quotes these arguments, not the caller's ``sys.argv``, when ``main(argv)`` is called from Python."""
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def print_and_write(table: str, out: Path | None) -> str:
    """Print ``table``; when ``out`` is set, write it there (folders made) and say so. Returns the table."""
    print("\n" + table)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        print(f"written to {out}")
    return table
