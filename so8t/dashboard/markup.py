"""Pieces of HTML shared by the page's sections (render.py, guard.py): values in human form and tables.

Units of :func:`format_value`: ``"s"`` (seconds, shown in s/ms/µs/ns), ``"B"`` (bytes, shown in kB/MB/GB),
``"rate"`` (a fraction 0..1, shown as a percentage with one decimal); any other unit is appended to the
value with one decimal (``"tok/s"``, ``"MB"``).
"""

from __future__ import annotations

from html import escape


def format_value(value: float, unit: str) -> str:
    """Human form of a metric value (units in the module docstring)."""
    if unit == "s":
        for factor, suffix in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= factor:
                return f"{value / factor:.3f} {suffix}"
        return f"{value / 1e-9:.1f} ns"
    if unit == "B":
        for factor, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if abs(value) >= factor:
                return f"{value / factor:.2f} {suffix}"
        return f"{value:.0f} B"
    if unit == "rate":
        return f"{100 * value:.1f}%"
    return f"{value:.1f} {unit}"


def is_number(value) -> bool:
    """A JSON number (bool excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table(headers: list[str], rows: list[str], cls: str) -> str:
    """A table of class ``cls``: escaped ``headers``, ``rows`` already ``<tr>`` HTML."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
