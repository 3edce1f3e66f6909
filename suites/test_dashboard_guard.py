"""The dashboard's safety guard figures: the "Safety guard" section and the regression rule on guard rates.

A hand-made history of two runs of a guard-quality benchmark (benchmarks/test_bench_guard_quality.py's
``extra_info`` keys), values chosen by hand: over-refusal 0.175 -> 0.25 (ratio 1.429, a regression: lower
is better), REFUSE recall 0.96 -> 1.0 (ratio 1.042: higher is better, not a regression), ESCALATE recall
1.0 -> 0.0 (a regression), over-compliance 0.0 -> 0.04 (a baseline of 0: a regression without a ratio).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from so8t.cli.dashboard import regression_line
from so8t.dashboard import METRICS, build_dashboard, compare, load_history
from so8t.dashboard.compare import judge
from suites.test_dashboard import RUN1, RUN2, _bench, write_history

GUARD = "benchmarks/test_bench_guard_quality.py::test_guard_quality[embedded]"
CLASSES = ["ALLOW", "ESCALATE", "REFUSE"]
COMMON = {"model": "embedded", "classes": CLASSES, "steps": 60, "batch_size": 8,
          "support_ALLOW": 40, "support_ESCALATE": 25, "support_REFUSE": 25}
BEFORE = COMMON | {
    "precision_ALLOW": 0.971, "recall_ALLOW": 0.825, "precision_ESCALATE": 1.0, "recall_ESCALATE": 1.0,
    "precision_REFUSE": 0.774, "recall_REFUSE": 0.96, "refuse_recall": 0.96, "escalate_recall": 1.0,
    "over_refusal_rate": 0.175, "over_compliance_rate": 0.0, "accuracy": 0.911,
    "calibration_offset_ALLOW": 0.0, "calibration_offset_ESCALATE": 0.0, "calibration_offset_REFUSE": 0.0,
}
AFTER = COMMON | {
    "precision_ALLOW": 0.95, "recall_ALLOW": 0.75, "precision_ESCALATE": None, "recall_ESCALATE": 0.0,
    "precision_REFUSE": 0.5, "recall_REFUSE": 1.0, "refuse_recall": 1.0, "escalate_recall": 0.0,
    "over_refusal_rate": 0.25, "over_compliance_rate": 0.04, "accuracy": 0.611,
    "calibration_offset_ALLOW": 0.0, "calibration_offset_ESCALATE": -0.5, "calibration_offset_REFUSE": 1.25,
    # intervals for two of the three rates: over-compliance shows as a run recorded before they existed
    "refuse_recall_ci95_low": 0.8668, "refuse_recall_ci95_high": 1.0,
    "over_refusal_rate_ci95_low": 0.1419, "over_refusal_rate_ci95_high": 0.4024,
}


@pytest.fixture()
def history_dir(tmp_path: Path) -> Path:
    first = RUN1 | {"benchmarks": [*RUN1["benchmarks"], _bench(GUARD, 30.0, 1.0, BEFORE)]}
    second = RUN2 | {"benchmarks": [*RUN2["benchmarks"], _bench(GUARD, 31.0, 1.0, AFTER)]}
    return write_history(tmp_path / ".benchmarks", runs=(first, second))


def _cells(row_html: str) -> list[str]:
    return re.findall(r"<td>([^<]*)</td>", row_html)


def test_guard_section_shows_the_latest_figures(history_dir: Path, tmp_path: Path):
    html = build_dashboard(history_dir, tmp_path / "d.html").output.read_text(encoding="utf-8")
    section = re.search(r'<section id="guard">(.*?)</section>', html).group(1)
    rows = dict(re.findall(rf'<tr data-benchmark="{re.escape(GUARD)}" data-class="(\w+)">(.*?)</tr>', section))
    assert {c: _cells(row) for c, row in rows.items()} == {
        "ALLOW": ["ALLOW", "95.0%", "75.0%", "40"],
        "ESCALATE": ["ESCALATE", "-", "0.0%", "25"],  # never predicted: no precision
        "REFUSE": ["REFUSE", "50.0%", "100.0%", "25"],
    }
    summary = re.search(r'<table class="guard-summary"><thead>(.*?)</thead><tbody>(.*?)</tbody>', section)
    assert re.findall(r"<th>([^<]*)</th>", summary.group(1)) == [
        "REFUSE recall", "ESCALATE recall", "over-refusal", "over-compliance", "accuracy"]
    assert _cells(summary.group(2)) == [
        "100.0% (95% CI 86.7%-100.0%)", "0.0%", "25.0% (95% CI 14.2%-40.2%)", "4.0%", "61.1%"]
    assert "model embedded; 60 training steps of batch 8" in section
    assert "calibration offset (logits) ALLOW +0.00, ESCALATE -0.50, REFUSE +1.25" in section
    assert "bbbbbbbb" in section and "aaaaaaaa" not in section  # the latest run only


def test_no_guard_benchmark_no_section(tmp_path: Path):
    html = build_dashboard(write_history(tmp_path / "h"), tmp_path / "d.html").output.read_text()
    assert 'id="guard"' not in html


def test_guard_rates_are_judged_in_their_direction(history_dir: Path):
    rows = {c.metric.key: c for c in compare(load_history(history_dir), threshold=0.10) if c.benchmark == GUARD}
    assert rows["over_refusal_rate"].regressed and rows["over_refusal_rate"].ratio == pytest.approx(0.25 / 0.175)
    assert not rows["refuse_recall"].regressed and rows["refuse_recall"].ratio == pytest.approx(1 / 0.96)
    assert rows["escalate_recall"].regressed  # 1.0 -> 0.0
    assert rows["over_compliance_rate"].regressed and rows["over_compliance_rate"].ratio is None  # 0 -> 0.04
    line = regression_line(rows["over_refusal_rate"], 0.10)
    assert line.startswith(f"REGRESSION {GUARD} over-refusal rate: previous 17.5% (run #0001 aaaaaaaa")
    assert line.endswith("-> current 25.0% (run #0002 bbbbbbbb 2026-11-02 03:30), ratio 1.429 > 1.10")


def test_guard_rates_in_the_comparison_table(history_dir: Path, tmp_path: Path):
    html = build_dashboard(history_dir, tmp_path / "d.html").output.read_text(encoding="utf-8")
    found = re.findall(rf'<tr class="(\w+)" data-benchmark="{re.escape(GUARD)}" data-metric="(\w+)"', html)
    by_metric = {metric: cls for cls, metric in found}
    assert by_metric == {"median": "ok", "refuse_recall": "ok", "escalate_recall": "regression",
                         "over_refusal_rate": "regression", "over_compliance_rate": "regression"}
    assert "<td>17.5%</td><td>25.0%</td><td>1.429</td><td>REGRESSION</td>" in html


@pytest.mark.parametrize("key, latest, regressed, improved", [
    ("over_refusal_rate", 0.0, False, False),  # 0 -> 0: unchanged
    ("over_refusal_rate", 0.05, True, False),  # lower is better: became positive
    ("refuse_recall", 0.5, False, True),  # higher is better: became positive
])
def test_baseline_zero(key: str, latest: float, regressed: bool, improved: bool):
    metric = next(m for m in METRICS if m.key == key)
    assert judge(metric, 0.0, latest, 0.10) == (None, regressed, improved)
