"""``so8t dashboard``: render the pytest-benchmark history of one machine as a self-contained HTML page."""

from __future__ import annotations

import sys

from so8t.cli.common import add_command


def register(sub) -> None:
    p = add_command(
        sub,
        "dashboard",
        "build the benchmark dashboard (one self-contained HTML page) from pytest-benchmark history",
        description=(
            "Read the JSON files that 'pytest benchmarks --benchmark-autosave' saved under "
            ".benchmarks/<machine>/ and write one HTML page (no network needed to view it): a trend per "
            "benchmark, tokens/s per quant type, the latest run against a baseline with regression flags, "
            "and the raw data for download."
        ),
    )
    p.add_argument(
        "history", metavar="BENCHMARKS_DIR", help="the .benchmarks directory, or one machine's folder"
    )
    p.add_argument("-o", "--output", default="dashboard.html", help="HTML file to write")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.10,
        help="relative change that counts as a regression (0.10 = 10%%)",
    )
    p.add_argument("--machine", default=None, help="machine folder under BENCHMARKS_DIR (needed if several)")
    p.add_argument(
        "--baseline",
        default="previous",
        help="compare the latest run with: previous, first, a run number, or a commit-id prefix",
    )
    p.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit with status 1 when a regression is flagged (one line per regression on stderr)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from so8t.dashboard import build_dashboard

    summary = build_dashboard(
        args.history, args.output, threshold=args.threshold, machine=args.machine, baseline=args.baseline
    )
    print(
        f"{summary.output}: {summary.runs} runs, {summary.benchmarks} benchmarks of machine {summary.machine}, "
        f"{len(summary.regressions)} regression(s) past {args.threshold:.0%}"
    )
    for row in summary.regressions:
        print("  " + regression_line(row, args.threshold, args.baseline), file=sys.stderr)
    return 1 if (args.fail_on_regression and summary.regressions) else 0


def regression_line(row, threshold: float, baseline: str = "previous") -> str:
    """One line naming the benchmark, the metric, the baseline and latest values and runs, and the ratio.

    The baseline value is called "previous" with the default ``--baseline previous``, "baseline" otherwise.

    Example: ``REGRESSION b.py::test_convert[embedded] median time: previous 2.000 s (run #0001 aaaaaaaa
    2026-11-01 02:00) -> current 2.500 s (run #0002 bbbbbbbb 2026-11-02 03:30), ratio 1.250 > 1.10``."""
    from so8t.dashboard.compare import Better
    from so8t.dashboard.markup import format_value

    unit = row.metric.unit
    lower = row.metric.better is Better.LOWER
    limit = f"{'>' if lower else '<'} {1 + threshold if lower else 1 - threshold:.2f}"
    ratio = f"ratio {row.ratio:.3f} {limit}" if row.ratio is not None else "ratio n/a"
    return (
        f"REGRESSION {row.benchmark} {row.metric.label}: "
        f"{'previous' if baseline == 'previous' else 'baseline'} {format_value(row.baseline, unit)} (run {row.baseline_run.label}) -> "
        f"current {format_value(row.latest, unit)} (run {row.latest_run.label}), {ratio}"
    )
