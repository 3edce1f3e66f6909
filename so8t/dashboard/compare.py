"""Latest run versus a baseline run, with a regression flag past a threshold.

Every compared quantity is a ``Metric``: the median time from ``stats`` and a few figures from
``extra_info`` (a data table, ``METRICS``). Each metric says which direction is better. With
``ratio = latest / baseline``, a change for the worse by more than ``threshold`` is a regression:

* lower is better (time, memory, size, the guard's over-refusal and over-compliance rates):
  regressed when ``ratio > 1 + threshold``;
* higher is better (tokens/s, the guard's REFUSE and ESCALATE recall): regressed when
  ``ratio < 1 - threshold``.

A baseline of 0 has no ratio: a metric where lower is better regresses when it becomes positive (an
over-refusal rate 0 -> 0.05), one where higher is better improves when it does.

"Latest" is, per benchmark, the most recent run that measured it (a run of a subset, e.g. ``-k Q8_0``,
leaves the other benchmarks at their own latest). The baseline of a benchmark is, per ``baseline``:
``"previous"`` (default) the run that measured it before its latest (asv / github-action-benchmark
style); ``"first"`` the oldest run that measured it; otherwise a run selector: its run number (``"3"``
or ``"0003"``) or a prefix of its commit id (the most recent matching run before the latest run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from so8t.dashboard.history import History, Measurement, Run
from so8t.errors import So8tError


class Better(Enum):
    LOWER = "lower"
    HIGHER = "higher"


@dataclass(frozen=True)
class Metric:
    key: str  # "median" (from stats) or an extra_info key
    label: str
    unit: str  # "s", "tok/s", "MB", "B", "rate" (a fraction; so8t.dashboard.markup.format_value)
    better: Better


#: What the table compares, in display order.
METRICS = (
    Metric("median", "median time", "s", Better.LOWER),
    Metric("prompt_tps", "prompt tokens/s", "tok/s", Better.HIGHER),
    Metric("gen_tps", "generation tokens/s", "tok/s", Better.HIGHER),
    Metric("peak_rss_mb", "peak RSS", "MB", Better.LOWER),
    Metric("file_size", "file size", "B", Better.LOWER),
    # the safety guard on held-out prompts (benchmarks/test_bench_guard_quality.py, so8t.training.metrics)
    Metric("refuse_recall", "REFUSE recall", "rate", Better.HIGHER),
    Metric("escalate_recall", "ESCALATE recall", "rate", Better.HIGHER),
    Metric("over_refusal_rate", "over-refusal rate", "rate", Better.LOWER),
    Metric("over_compliance_rate", "over-compliance rate", "rate", Better.LOWER),
)

DEFAULT_THRESHOLD = 0.10


@dataclass(frozen=True)
class Comparison:
    benchmark: str
    metric: Metric
    baseline_run: Run
    latest_run: Run
    baseline: float
    latest: float
    ratio: float | None  # latest / baseline; None when the baseline is 0
    regressed: bool
    improved: bool


def check_threshold(threshold: float) -> float:
    """Validate a relative threshold (0 < t < 1)."""
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0 < threshold < 1):
        raise So8tError(
            f"regression threshold {threshold!r} is not a fraction between 0 and 1",
            hint="e.g. --threshold 0.10 for 10%",
        )
    return float(threshold)


def metric_value(measurement: Measurement, metric: Metric) -> float | None:
    """The value of ``metric`` in one measurement, or None when it was not recorded."""
    value = measurement.median if metric.key == "median" else measurement.extra.get(metric.key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def judge(
    metric: Metric, baseline: float, latest: float, threshold: float
) -> tuple[float | None, bool, bool]:
    """(ratio, regressed, improved) of one metric; see the module docstring for the rule."""
    if baseline == 0:
        became_positive = latest > 0
        lower = metric.better is Better.LOWER
        return None, became_positive and lower, became_positive and not lower
    ratio = latest / baseline
    if metric.better is Better.LOWER:
        return ratio, ratio > 1 + threshold, ratio < 1 - threshold
    return ratio, ratio < 1 - threshold, ratio > 1 + threshold


def baseline_run(history: History, fullname: str, baseline: str = "previous") -> Run | None:
    """The run the latest measurement of ``fullname`` is compared against (None if there is none)."""
    earlier = [run for run, _ in history.series(fullname)][:-1]
    if not earlier:
        return None
    if baseline == "previous":
        return earlier[-1]
    if baseline == "first":
        return earlier[0]
    selected = select_run(history, baseline)
    return selected if selected in earlier else None


def select_run(history: History, selector: str) -> Run:
    """A run by number (``"3"``, ``"0003"``) or by commit-id prefix; So8tError when none matches."""
    candidates = history.runs[:-1]
    if selector.isdigit():
        for run in reversed(candidates):
            if run.number == int(selector):
                return run
    for run in reversed(candidates):
        if run.commit.startswith(selector.lower()):
            return run
    raise So8tError(
        f"no earlier run matches baseline {selector!r}",
        path=history.directory,
        hint="use 'previous', 'first', a run number, or a commit-id prefix",
    )


def compare(
    history: History, threshold: float = DEFAULT_THRESHOLD, baseline: str = "previous"
) -> list[Comparison]:
    """Compare every metric of every benchmark of the latest run with its baseline run."""
    threshold = check_threshold(threshold)
    if baseline not in ("previous", "first"):
        select_run(history, baseline)  # fail early on a selector that matches nothing
    rows: list[Comparison] = []
    for fullname in history.benchmark_names():
        latest, now = history.latest_of(fullname)
        base_run = baseline_run(history, fullname, baseline)
        if base_run is None:
            continue
        before = base_run.measurements[fullname]
        for metric in METRICS:
            old, new = metric_value(before, metric), metric_value(now, metric)
            if old is None or new is None:
                continue
            ratio, regressed, improved = judge(metric, old, new, threshold)
            rows.append(Comparison(fullname, metric, base_run, latest, old, new, ratio, regressed, improved))
    return rows
