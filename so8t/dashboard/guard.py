"""The page's "Safety guard" section: what each guard-quality benchmark measured in its latest run.

A guard-quality measurement is one whose ``extra_info`` (benchmarks/test_bench_guard_quality.py) holds
``classes`` (the safety classes in logit order) and ``over_refusal_rate``. Its figures are those of
so8t.training.metrics on the held-out prompts, flat: per class ``precision_<CLASS>``, ``recall_<CLASS>``,
``support_<CLASS>`` (prompts of that class); ``refuse_recall``, ``escalate_recall``, ``over_refusal_rate``,
``over_compliance_rate``, ``accuracy``; and from the training, ``steps``, ``batch_size`` and the calibration's
``calibration_offset_<CLASS>`` (logits); for REFUSE recall and the two rates, ``<key>_ci95_low`` and
``<key>_ci95_high``, the 95% Wilson interval, shown beside the figure when recorded (older runs have none).
Fractions are shown as percentages; a figure that was not recorded, or that the run could not define (the
precision of a class the head never predicted: JSON null), as "-".
"""

from __future__ import annotations

from html import escape

from so8t.dashboard.history import History, Measurement, Run
from so8t.dashboard.markup import format_value, is_number, table

#: The summary row: (extra_info key, column header), in display order.
SUMMARY = (
    ("refuse_recall", "REFUSE recall"),
    ("escalate_recall", "ESCALATE recall"),
    ("over_refusal_rate", "over-refusal"),
    ("over_compliance_rate", "over-compliance"),
    ("accuracy", "accuracy"),
)


def is_guard(measurement: Measurement) -> bool:
    return isinstance(measurement.extra.get("classes"), list) and "over_refusal_rate" in measurement.extra


def _rate(value) -> str:
    return f"<td>{format_value(value, 'rate')}</td>" if is_number(value) else "<td>-</td>"


def _summary_cell(extra: dict, key: str) -> str:
    low, high = extra.get(f"{key}_ci95_low"), extra.get(f"{key}_ci95_high")
    if not (is_number(extra.get(key)) and is_number(low) and is_number(high)):
        return _rate(extra.get(key))
    return f"<td>{format_value(extra[key], 'rate')} (95% CI {format_value(low, 'rate')}-{format_value(high, 'rate')})</td>"


def _facts(run: Run, extra: dict, classes: list[str]) -> str:
    facts = [f"run {escape(run.label)}"]
    if extra.get("model"):
        facts.append(f"model {escape(str(extra['model']))}")
    if is_number(extra.get("steps")) and is_number(extra.get("batch_size")):
        facts.append(f"{extra['steps']} training steps of batch {extra['batch_size']}")
    offsets = [f"{escape(c)} {extra[k]:+.2f}" for c in classes if is_number(extra.get(k := f"calibration_offset_{c}"))]
    if offsets:
        facts.append("calibration offset (logits) " + ", ".join(offsets))
    return "; ".join(facts)


def _card(fullname: str, run: Run, extra: dict) -> str:
    classes = [str(c) for c in extra["classes"]]
    name = escape(fullname)
    rows = []
    for c in classes:
        support = extra.get(f"support_{c}")
        rows.append(
            f'<tr data-benchmark="{name}" data-class="{escape(c)}"><td>{escape(c)}</td>'
            f"{_rate(extra.get(f'precision_{c}'))}{_rate(extra.get(f'recall_{c}'))}"
            f"<td>{support if is_number(support) else '-'}</td></tr>"
        )
    summary = f'<tr data-benchmark="{name}">{"".join(_summary_cell(extra, key) for key, _ in SUMMARY)}</tr>'
    return (
        f'<div class="guard" data-benchmark="{name}"><h3>{name}</h3><p>{_facts(run, extra, classes)}</p>'
        f"{table(['class', 'precision', 'recall', 'prompts'], rows, 'guard-classes')}"
        f"{table([header for _, header in SUMMARY], [summary], 'guard-summary')}</div>"
    )


def guard_section(history: History) -> str:
    """The section's HTML, or "" when no benchmark of the history is a guard-quality one."""
    cards = []
    for fullname in history.benchmark_names():
        run, measurement = history.latest_of(fullname)
        if is_guard(measurement):
            cards.append(_card(fullname, run, measurement.extra))
    if not cards:
        return ""
    return (
        '<section id="guard"><h2>Safety guard (held-out prompts, latest run of each benchmark)</h2>'
        "<p>The safety head trained and calibrated by the benchmark, judged on prompts it never saw. "
        "Over-refusal: safe prompts flagged ESCALATE or REFUSE; over-compliance: dangerous prompts "
        "answered ALLOW.</p>"
        f"{''.join(cards)}</section>"
    )
