"""The ``fisherprec`` command line.

Each subcommand lives in its own module, listed in :data:`COMMANDS`; a module
exposes ``register(subparsers)``, which adds its parser and sets ``func`` (a
callable taking the parsed arguments and returning the exit status).
Raising :class:`fisherprec._cliutils.UsageError` from ``func`` prints a one-line
error and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fisherprec._cliutils import UsageError

COMMANDS: tuple[str, ...] = (
    "fisherprec.demo",
    "fisherprec.compare",
    "fisherprec.bench",
    "fisherprec.figure1",
)


def build_parser() -> argparse.ArgumentParser:
    import fisherprec

    parser = argparse.ArgumentParser(
        prog="fisherprec",
        description="Fisher preconditioning for PyTorch: compare optimizers on built-in tasks, "
        "benchmark the kernels, inspect the build.",
    )
    parser.add_argument(
        "--version", action="version", version=f"fisherprec {fisherprec.__version__}"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors: return rather than exit
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    try:
        return int(args.func(args))
    except UsageError as err:
        print(f"fisherprec {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fisherprec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
