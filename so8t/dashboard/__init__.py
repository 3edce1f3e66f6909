"""Benchmark dashboard: the pytest-benchmark history of one machine as one self-contained HTML page.

Public API::

    from so8t.dashboard import build_dashboard, load_history, compare, render_html

    history = load_history(".benchmarks", machine=None)       # History (runs oldest first)
    rows = compare(history, threshold=0.10, baseline="previous")  # list[Comparison]
    html = render_html(history, rows, threshold=0.10, baseline="previous")
    summary = build_dashboard(".benchmarks", "dashboard.html")  # all of the above, written atomically

Modules: ``history`` (read and validate the JSON files), ``compare`` (latest versus baseline, regression
rule), ``charts`` (inline SVG), ``markup`` (values in human form, tables), ``guard`` (the safety guard
section), ``render`` (the page).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from so8t.dashboard.compare import DEFAULT_THRESHOLD, METRICS, Comparison, check_threshold, compare
from so8t.dashboard.history import History, Measurement, Run, load_history
from so8t.dashboard.render import render_html
from so8t.io import atomic_path

__all__ = [
    "DEFAULT_THRESHOLD",
    "METRICS",
    "Comparison",
    "DashboardSummary",
    "History",
    "Measurement",
    "Run",
    "build_dashboard",
    "compare",
    "load_history",
    "render_html",
]


@dataclass(frozen=True)
class DashboardSummary:
    output: Path
    machine: str
    runs: int
    benchmarks: int
    regressions: list[Comparison]


def build_dashboard(
    history_dir: str | Path,
    output: str | Path,
    threshold: float = DEFAULT_THRESHOLD,
    machine: str | None = None,
    baseline: str = "previous",
) -> DashboardSummary:
    """Load the history, compare, render, and write ``output`` atomically."""
    threshold = check_threshold(threshold)
    history = load_history(history_dir, machine=machine)
    rows = compare(history, threshold=threshold, baseline=baseline)
    html = render_html(history, rows, threshold=threshold, baseline=baseline)
    output = Path(output)
    with atomic_path(output) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return DashboardSummary(
        output=output,
        machine=history.machine,
        runs=len(history.runs),
        benchmarks=len(history.benchmark_names()),
        regressions=[row for row in rows if row.regressed],
    )
