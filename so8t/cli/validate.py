"""``so8t validate``: check an exported text GGUF (+ sidecar, mmproj, and the SO8T checkpoint if given).

Prints one line per check and writes the JSON report (schema: ``so8t.validation.report``) atomically.
Exit codes: 0 overall PASS (every check passed, logit parity against PyTorch included); 3 UNVERIFIED
(every check that ran passed, but parity did not run: no ``--so8t-model``, or ``--no-runtime``); 1 the
files failed a check (FAIL) or a check could not run (ERROR); 2 a usage error (the report's directory
does not exist, ``--so8t-model`` is not an SO8T checkpoint).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from so8t.cli.common import add_command

#: Exit code of a run whose checks all passed but whose parity check did not run.
UNVERIFIED_EXIT = 3


def register(sub) -> None:
    p = add_command(
        sub,
        "validate",
        "validate an exported GGUF: metadata, tensors, SO(8) group laws, llama.cpp load, parity",
        description="Validate an exported SO8T text GGUF for stock llama.cpp. Sidecar and mmproj default to "
        "the exporter's siblings (<stem>.so8t.gguf, mmproj-*.gguf). Exit 0 only when every check passes, logit "
        "parity against PyTorch (needs --so8t-model) included; 3 when every check that ran passed but parity "
        "did not run; 1 on FAIL or ERROR; 2 on a usage error.",
    )
    p.add_argument("--gguf-model", required=True, type=Path, help="text GGUF to validate")
    p.add_argument("--so8t-model", type=Path, default=None,
                   help="SO8T checkpoint directory it was exported from (enables value, consistency and parity checks)")
    p.add_argument("--sidecar", type=Path, default=None, help="SO8T sidecar GGUF (default: <stem>.so8t.gguf)")
    p.add_argument("--mmproj", type=Path, default=None, help="vision GGUF (default: the mmproj-*.gguf beside it)")
    p.add_argument("--output-report", required=True, type=Path, help="where to write the JSON report")
    p.add_argument("--no-runtime", action="store_true", help="skip the llama.cpp load and parity stage")
    p.set_defaults(func=run)


def run(args) -> int:
    import so8t
    from so8t.errors import So8tError
    from so8t.validation import CHECKS

    parent = args.output_report.parent if str(args.output_report.parent) else Path(".")
    if not parent.is_dir():
        raise So8tError("report directory does not exist", path=parent)
    # A --so8t-model that is not an SO8T checkpoint raises before any check: a usage error (exit 2).
    with _progress(len(CHECKS), args.verbose) as show:
        report = so8t.validate(args.gguf_model, args.so8t_model, sidecar=args.sidecar, mmproj=args.mmproj,
                               run_runtime=not args.no_runtime, output_report=args.output_report, progress=show)
    print(report.table(verbose=args.verbose))
    print(f"report: {args.output_report}")
    if report.passed:
        return 0
    if report.overall == "UNVERIFIED":
        print(f"so8t validate: UNVERIFIED: {args.gguf_model}: every check that ran passed, but logit parity "
              "against PyTorch did not run; pass --so8t-model DIR (the SO8T checkpoint it was exported from) "
              "to check it", file=sys.stderr)
        return UNVERIFIED_EXIT
    first = next(c for c in report.checks if c.status in ("FAIL", "ERROR"))
    where = "" if str(args.gguf_model) in first.reason else f"{args.gguf_model}: "
    print(f"so8t validate: {report.overall}: {where}{first.name}: {first.reason}", file=sys.stderr)
    return 1


@contextlib.contextmanager
def _progress(total: int, verbose: bool):
    """A tqdm bar over the checks on stderr, opened at the first finished check (so a usage error raised
    before any check prints its one line only); with ``verbose`` also one line per finished check."""
    from tqdm import tqdm

    with contextlib.ExitStack() as stack:
        bars = []

        def show(result) -> None:
            if not bars:
                bars.append(stack.enter_context(
                    tqdm(total=total, desc="so8t validate", unit="check", file=sys.stderr, leave=False)))
            bar = bars[0]
            bar.set_postfix_str(result.name)
            bar.update(1)
            if verbose:
                bar.write(f"  {result.status:<5} {result.name} ({result.duration_s:.2f} s)", file=sys.stderr)

        yield show
