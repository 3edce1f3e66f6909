"""Helpers shared by the subcommand modules."""

from __future__ import annotations

import argparse


def add_command(sub, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """Create a subcommand parser with the options every command has (``--verbose``)."""
    parser = sub.add_parser(
        name,
        help=help,
        description=description or help,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and extra detail")
    return parser


def add_guard_options(parser: argparse.ArgumentParser) -> None:
    """The options ``so8t run`` and ``so8t serve`` share: the sidecar, the guard and llama.cpp's context."""
    parser.add_argument("--sidecar", default="auto",
                        help="SO8T sidecar GGUF with the safety head ('auto': <model stem>.so8t.gguf if present; "
                        "'none')")
    parser.add_argument("--no-guard", action="store_true",
                        help="no guard (no safety verdict); by default the trained safety head decides before the "
                        "first token, in the same llama.cpp prefill, and REFUSE generates nothing")
    parser.add_argument("--on-escalate", choices=("answer", "refuse"), default="answer",
                        help="what the guard does with ESCALATE: answer and report it, or refuse like REFUSE")
    parser.add_argument("--refusal-text", default=None, help="the answer of a request the guard refuses")
    parser.add_argument("--ctx", type=int, default=2048, help="context length")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores, max 8)")
