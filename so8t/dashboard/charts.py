"""Inline SVG charts (no library, no external resource): a trend line with a band, and grouped bars.

Coordinates are SVG user units, y grows downwards. Every data point carries a ``<title>`` so the
browser shows its exact value on hover without any script. The SVG elements are written for inline
use in an HTML5 document (no ``xmlns`` attribute needed there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 600, 240
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 52, 14, 58

#: Time units, largest first: (factor from seconds, suffix).
TIME_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))

#: Bar colours, one per series (colour-blind safe palette).
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00")


@dataclass(frozen=True)
class TrendPoint:
    label: str  # commit, first axis line
    sublabel: str  # date, second axis line
    median: float
    q1: float
    q3: float
    tooltip: str
    flagged: bool = False


def time_unit(max_seconds: float) -> tuple[float, str]:
    """The largest unit in which ``max_seconds`` is at least 1 (seconds for anything >= 1 s)."""
    for factor, suffix in TIME_UNITS:
        if max_seconds >= factor:
            return factor, suffix
    return TIME_UNITS[-1]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1-2-5 steps)."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(low / step) * step
    ticks = []
    value = start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _frame(kind: str, title: str, ticks: list[float], unit_label: str) -> tuple[list[str], object]:
    """Open an SVG chart of ``kind`` with horizontal grid lines at ``ticks`` and a y-axis label.

    Returns the SVG pieces so far and ``y(value)``, the vertical position of a value (0 at the bottom)."""
    top = ticks[-1]
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    def y(v: float) -> float:
        return MARGIN_TOP + plot_h * (1 - v / top)

    out = [
        f'<svg class="chart {kind}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in ticks:
        out.append(
            f'<line class="grid" x1="{MARGIN_LEFT}" x2="{WIDTH - MARGIN_RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
            f'<text class="ytick" x="{MARGIN_LEFT - 6}" y="{y(tick) + 4:.1f}">{_fmt(tick)}</text>'
        )
    out.append(
        f'<text class="yunit" x="12" y="{MARGIN_TOP + plot_h / 2:.1f}" '
        f'transform="rotate(-90 12 {MARGIN_TOP + plot_h / 2:.1f})">{unit_label}</text>'
    )
    return out, y


def trend_svg(points: list[TrendPoint], title: str) -> str:
    """Median trend with its q1..q3 band; x = runs in order, labelled by commit and date."""
    factor, unit = time_unit(max(p.q3 for p in points))
    scaled = [(p.median / factor, p.q1 / factor, p.q3 / factor) for p in points]
    ticks = nice_ticks(0.0, max(q3 for _, _, q3 in scaled))
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT

    def x(i: int) -> float:
        return MARGIN_LEFT + (plot_w / 2 if len(points) == 1 else plot_w * i / (len(points) - 1))

    out, y = _frame("trend", title, ticks, f"median ({unit})")
    upper = " ".join(f"{x(i):.1f},{y(q3):.1f}" for i, (_, _, q3) in enumerate(scaled))
    lower = " ".join(f"{x(i):.1f},{y(q1):.1f}" for i, (_, q1, _) in reversed(list(enumerate(scaled))))
    out.append(f'<polygon class="band" points="{upper} {lower}"><title>interquartile range</title></polygon>')
    line = " ".join(f"{x(i):.1f},{y(m):.1f}" for i, (m, _, _) in enumerate(scaled))
    out.append(f'<polyline class="median" points="{line}"/>')
    step = max(1, math.ceil(len(points) / 12))  # at most about 12 axis labels
    for i, (point, (median, _, _)) in enumerate(zip(points, scaled)):
        cls = "point flagged" if point.flagged else "point"
        out.append(
            f'<circle class="{cls}" cx="{x(i):.1f}" cy="{y(median):.1f}" r="4">'
            f"<title>{escape(point.tooltip)}</title></circle>"
        )
        if i % step == 0 or i == len(points) - 1:
            base = HEIGHT - MARGIN_BOTTOM
            out.append(
                f'<text class="xtick" x="{x(i):.1f}" y="{base + 16}">{escape(point.label)}</text>'
                f'<text class="xtick sub" x="{x(i):.1f}" y="{base + 30}">{escape(point.sublabel)}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def bars_svg(
    categories: list[str], series: list[tuple[str, list[float | None]]], title: str, unit: str
) -> str:
    """Grouped bars: one group per category (e.g. quant type), one bar per series, side by side."""
    values = [v for _, vals in series for v in vals if v is not None]
    ticks = nice_ticks(0.0, max(values) if values else 1.0)
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    group_w = plot_w / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    out, y = _frame("bars", title, ticks, escape(unit))
    for c, category in enumerate(categories):
        left = MARGIN_LEFT + c * group_w + group_w * 0.1
        for s, (name, vals) in enumerate(series):
            value = vals[c]
            if value is None:
                continue
            colour = PALETTE[s % len(PALETTE)]
            out.append(
                f'<rect class="bar" x="{left + s * bar_w:.1f}" y="{y(value):.1f}" width="{bar_w * 0.92:.1f}" '
                f'height="{y(0) - y(value):.1f}" fill="{colour}">'
                f"<title>{escape(category)} {escape(name)}: {_fmt(value)} {escape(unit)}</title></rect>"
            )
        out.append(
            f'<text class="xtick" x="{MARGIN_LEFT + (c + 0.5) * group_w:.1f}" '
            f'y="{HEIGHT - MARGIN_BOTTOM + 16}">{escape(category)}</text>'
        )
    for s, (name, _) in enumerate(series):  # legend under the axis
        lx = MARGIN_LEFT + s * 170
        ly = HEIGHT - 18
        out.append(
            f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{PALETTE[s % len(PALETTE)]}"/>'
            f'<text class="legend" x="{lx + 16}" y="{ly}">{escape(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)
