"""The ``so8t`` command. Each subcommand lives in its own module with ``register(subparsers)``.

Handlers import heavy libraries (torch, llama_cpp) lazily so ``so8t --help`` stays fast.
Errors: a ``So8tError`` prints one line to stderr and exits 2 (a traceback only with ``--verbose``);
Ctrl-C exits 130; outputs are written atomically by the handlers, so nothing partial is left behind.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from so8t import __version__
from so8t.errors import So8tError

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = ("analyze", "convert", "train", "imatrix", "export", "run", "serve", "validate", "pipeline", "dashboard", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="so8t",
        description=(
            "Convert Qwen2-VL checkpoints to SO8T (learnable SO(8) rotations on every residual write), "
            "export GGUF files that stock llama.cpp runs, validate them, and run them."
        ),
        epilog="Run 'so8t COMMAND --help' for the options of one command. "
        "Start with 'so8t pipeline --demo' to see everything on the embedded default model.",
    )
    parser.add_argument("--version", action="version", version=f"so8t {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"so8t.cli.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # e.g. for 'so8t train' to print its resume command
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except So8tError as err:
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"so8t {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"so8t {args.command}: interrupted; no partial output was left", file=sys.stderr)
        return 130
