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
