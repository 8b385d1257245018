"""The `crossmodal` command line: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence

# Each module defines `register(subparsers)`, which adds its parser and sets `func`.
# Modules keep heavy imports (torch, open_clip) inside their handlers so that
# `crossmodal --help` and the serving commands never load them.
COMMAND_MODULES: tuple[str, ...] = (
    "crossmodal.cli.up",
    "crossmodal.cli.ingest",
    "crossmodal.cli.search",
    "crossmodal.cli.stats",
    "crossmodal.cli.reshard",
    "crossmodal.cli.demo",
    "crossmodal.cli.export_model",
    "crossmodal.cli.make_gallery",
    "crossmodal.cli.train_demo_model",
    "crossmodal.cli.train_audio_tower",
    "crossmodal.cli.eval_model",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="crossmodal", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `crossmodal` CLI and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # Whoever read the output went away (`crossmodal search ... | head -1`): stop quietly with the status of
        # a Unix tool ended by SIGPIPE. Stdout now points at /dev/null, so the interpreter's last flush of what
        # is still buffered cannot fail a second time on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
