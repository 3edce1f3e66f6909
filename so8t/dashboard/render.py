"""Render a benchmark ``History`` as ONE self-contained HTML page.

Everything is inline: CSS, SVG charts (drawn here, in Python), a small script and the raw history as
embedded JSON. A Content-Security-Policy of ``default-src 'none'`` makes the page unable to fetch
anything, so it opens from ``file://`` with no network and no CDN. The script only adds comforts
(filtering, "regressions only", the Blob download of the raw data); the charts and tables are plain
HTML/SVG and read fine without it.

Sections: summary, latest-versus-baseline table (ratios, regression flags past the threshold), in-run
baseline ratios recorded by the benchmarks (``extra_info`` keys ending in ``ratio``), tokens/s per quant
type side by side (latest run), the safety guard's per-class precision / recall and its REFUSE recall,
over-refusal and over-compliance (guard.py; latest run of each guard-quality benchmark), one trend per
benchmark (median with its interquartile band, commit and date on the axis), the list of runs, and the raw
data download.
"""

from __future__ import annotations

import json
from html import escape

from so8t.dashboard.charts import TrendPoint, bars_svg, trend_svg
from so8t.dashboard.compare import Comparison
from so8t.dashboard.guard import guard_section
from so8t.dashboard.history import History
from so8t.dashboard.markup import format_value, is_number, table

#: Tokens/s charts: (title, [(extra_info key, series name), ...]); series side by side per quant type.
TPS_CHARTS = (
    ("Prompt tokens/s", (("prompt_tps", "SO8T"), ("ref_prompt_tps", "unrotated reference"))),
    ("Generation tokens/s", (("gen_tps", "SO8T"), ("ref_gen_tps", "unrotated reference"))),
)


def _comparison_section(comparisons: list[Comparison], threshold: float, baseline: str) -> str:
    flagged = sum(c.regressed for c in comparisons)
    rows = []
    for c in comparisons:
        status = "REGRESSION" if c.regressed else ("improved" if c.improved else "ok")
        cls = "regression" if c.regressed else ("improved" if c.improved else "ok")
        ratio = f"{c.ratio:.3f}" if c.ratio is not None else "n/a"
        rows.append(
            f'<tr class="{cls}" data-benchmark="{escape(c.benchmark)}" data-metric="{c.metric.key}" '
            f'data-ratio="{ratio}"><td>{escape(c.benchmark)}</td><td>{escape(c.metric.label)}</td>'
            f"<td>{escape(c.baseline_run.label)}</td><td>{escape(c.latest_run.label)}</td>"
            f"<td>{format_value(c.baseline, c.metric.unit)}</td>"
            f"<td>{format_value(c.latest, c.metric.unit)}</td><td>{ratio}</td><td>{status}</td></tr>"
        )
    if not rows:
        body = "<p>Only one run holds these benchmarks: nothing to compare yet.</p>"
    else:
        body = table(
            [
                "benchmark",
                "metric",
                "baseline run",
                "latest run",
                "baseline",
                "latest",
                "ratio latest/baseline",
                "status",
            ],
            rows,
            "comparison",
        )
    return (
        f'<section id="comparison"><h2>Latest versus baseline ({escape(baseline)})</h2>'
        f'<p class="summary"><span id="regression-count">{flagged}</span> regression(s) past '
        f'<span id="threshold">{threshold:.0%}</span>. Times, memory, size and the guard\'s error rates '
        f"regress when the ratio exceeds {1 + threshold:.2f}; tokens/s and the guard's recalls when it falls "
        f"below {1 - threshold:.2f}.</p>"
        '<label><input type="checkbox" id="only-regressions"> regressions only</label>'
        f"{body}</section>"
    )


def _ratio_section(history: History) -> str:
    rows = []
    for fullname in history.benchmark_names():
        run, m = history.latest_of(fullname)
        for key, value in sorted(m.extra.items()):
            if (key.endswith("ratio") or key.startswith("ratio_")) and is_number(value):
                rows.append(
                    f"<tr><td>{escape(fullname)}</td><td>{escape(run.label)}</td><td>{escape(key)}</td>"
                    f"<td>{value:.3f}</td></tr>"
                )
    if not rows:
        return ""
    return (
        '<section id="inrun"><h2>Baselines measured in the same run (latest of each benchmark)</h2>'
        "<p>Ratios the benchmarks recorded against a baseline timed in the same session "
        "(llama.cpp's own converter for export, the unrotated model's GGUF for inference).</p>"
        f"{table(['benchmark', 'run', 'ratio', 'value'], rows, 'ratios')}</section>"
    )


def _tps_section(history: History) -> str:
    """Tokens/s per quant type, side by side; the latest measurement of each inference benchmark, one
    group per model label (``extra_info["model"]``: embedded, full, ...)."""
    keys = [key for _, series in TPS_CHARTS for key, _ in series]
    groups: dict[str, dict[str, tuple]] = {}
    for fullname in history.benchmark_names():
        run, m = history.latest_of(fullname)
        quant = m.extra.get("quant")
        if isinstance(quant, str) and any(is_number(m.extra.get(k)) for k in keys):
            groups.setdefault(str(m.extra.get("model", "")), {})[quant] = (run, m)
    parts = []
    for model, by_quant in groups.items():
        quants = list(by_quant)
        charts = []
        for title, series_keys in TPS_CHARTS:
            series = []
            for key, name in series_keys:
                values = [by_quant[q][1].extra.get(key) for q in quants]
                values = [float(v) if is_number(v) else None for v in values]
                if any(v is not None for v in values):
                    series.append((name, values))
            if series:
                chart = bars_svg(quants, series, title, "tokens/s")
                charts.append(f'<div class="card"><h4>{escape(title)}</h4>{chart}</div>')
        rows = []
        for q in quants:
            run, m = by_quant[q]
            cells = "".join(
                f"<td>{m.extra[k]:.1f}</td>" if is_number(m.extra.get(k)) else "<td>-</td>"
                for k in ("prompt_tps", "ref_prompt_tps", "gen_tps", "ref_gen_tps")
            )
            rows.append(
                f'<tr data-model="{escape(model)}" data-quant="{escape(q)}"><td>{escape(q)}</td>{cells}'
                f"<td>{escape(run.label)}</td></tr>"
            )
        headers = ["quant", "prompt tok/s", "reference prompt tok/s", "generation tok/s"]
        headers += ["reference generation tok/s", "run"]
        title = f"model {escape(model)}" if model else "latest measurements"
        parts.append(
            f'<h3>{title}</h3><div class="grid">{"".join(charts)}</div>{table(headers, rows, "tps")}'
        )
    if not parts:
        return ""
    return (
        '<section id="tps"><h2>Tokens/s per quant type (SO8T file against the unrotated reference)</h2>'
        f"{''.join(parts)}</section>"
    )


def _trend_section(history: History, comparisons: list[Comparison]) -> str:
    flagged = {c.benchmark for c in comparisons if c.regressed and c.metric.key == "median"}
    cards = []
    for fullname in history.benchmark_names():
        points = [
            TrendPoint(
                label=run.short_commit,
                sublabel=run.date_label,
                median=m.median,
                q1=m.q1,
                q3=m.q3,
                tooltip=f"{run.label}: median {format_value(m.median, 's')} "
                f"(q1 {format_value(m.q1, 's')}, q3 {format_value(m.q3, 's')}, {m.rounds} rounds)",
                flagged=run is history.latest and fullname in flagged,
            )
            for run, m in history.series(fullname)
        ]
        mark = ' <span class="flag">REGRESSION</span>' if fullname in flagged else ""
        cards.append(
            f'<div class="card trend-card" data-benchmark="{escape(fullname)}">'
            f"<h3>{escape(fullname)}{mark}</h3>{trend_svg(points, fullname)}</div>"
        )
    return (
        '<section id="trends"><h2>Trends (median, band = interquartile range)</h2>'
        '<input type="search" id="filter" placeholder="filter benchmarks">'
        f'<div class="grid">{"".join(cards)}</div></section>'
    )


def _runs_section(history: History) -> str:
    rows = [
        f'<tr class="run"><td>{run.number if run.number is not None else "-"}</td><td>{escape(run.commit)}'
        f"{' (dirty)' if run.dirty else ''}</td><td>{escape(run.branch)}</td><td>{escape(run.date_label)}</td>"
        f"<td>{len(run.measurements)}</td><td>{escape(run.path.name)}</td></tr>"
        for run in history.runs
    ]
    return (
        f'<section id="runs"><h2>Runs ({len(history.runs)})</h2>'
        f"{table(['run', 'commit', 'branch', 'date (UTC)', 'benchmarks', 'file'], rows, 'runs')}"
        '<p><a id="download" href="#" download="benchmarks.json">Download the raw data (JSON)</a> '
        "(every run file as saved by pytest-benchmark).</p></section>"
    )


def _machine_line(history: History) -> str:
    info = history.latest.machine_info
    cpu = info.get("cpu") if isinstance(info.get("cpu"), dict) else {}
    parts = [cpu.get("brand_raw"), f"{cpu.get('count')} CPUs" if cpu.get("count") else None]
    so8t = info.get("so8t") if isinstance(info.get("so8t"), dict) else {}
    parts += [f"{k} {v}" for k, v in so8t.items() if isinstance(v, (str, int, float))]
    return ", ".join(escape(str(p)) for p in parts if p)


def _embedded_json(history: History, threshold: float) -> str:
    payload = {
        "machine": history.machine,
        "threshold": threshold,
        "runs": [{"file": run.path.name, "data": run.raw} for run in history.runs],
    }
    text = json.dumps(payload, sort_keys=True)
    # Safe inside <script>: no "</script>", no "<!--"; JSON.parse reads the escapes back.
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.6em 0 .5em;border-bottom:1px solid #ccc}
h3{font-size:.95em;margin:.2em 0;word-break:break-all}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left}
th{background:#f4f4f4}tr.regression td{background:#fde2e1}tr.improved td{background:#e3f6e8}
.flag{color:#fff;background:#c0392b;border-radius:3px;padding:0 .3em;font-size:.8em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:1em}
.card{border:1px solid #ddd;border-radius:6px;padding:.5em}
svg.chart{width:100%;height:auto}.grid line,svg line.grid{stroke:#e5e5e5}
svg text{font-size:11px;fill:#444}svg .ytick{text-anchor:end}svg .xtick{text-anchor:middle}
svg .xtick.sub{fill:#888;font-size:10px}svg .yunit{text-anchor:middle}
svg .band{fill:#0072b2;opacity:.18}svg .median{fill:none;stroke:#0072b2;stroke-width:2}
svg .point{fill:#0072b2}svg .point.flagged{fill:#c0392b;r:6px}
#filter{margin:.3em 0 .8em;padding:.3em;width:20em}.muted{color:#777}
"""

_SCRIPT = """
(function () {
  "use strict";
  var raw = JSON.parse(document.getElementById("so8t-raw").textContent);
  var link = document.getElementById("download");
  var blob = new Blob([JSON.stringify(raw, null, 1)], {type: "application/json"});
  link.href = URL.createObjectURL(blob);
  link.download = "so8t-benchmarks-" + raw.machine + ".json";
  var filter = document.getElementById("filter");
  filter.addEventListener("input", function () {
    var q = filter.value.toLowerCase();
    document.querySelectorAll(".trend-card").forEach(function (card) {
      card.style.display = card.dataset.benchmark.toLowerCase().indexOf(q) >= 0 ? "" : "none";
    });
  });
  var only = document.getElementById("only-regressions");
  only.addEventListener("change", function () {
    document.querySelectorAll("table.comparison tbody tr").forEach(function (row) {
      row.style.display = only.checked && !row.classList.contains("regression") ? "none" : "";
    });
  });
  var names = {};
  raw.runs.forEach(function (run) {
    run.data.benchmarks.forEach(function (b) { names[b.fullname || b.name] = true; });
  });
  document.getElementById("status").textContent = "Loaded " + raw.runs.length + " runs, " +
    Object.keys(names).length + " benchmarks.";
  document.body.setAttribute("data-ready", "yes");
})();
"""


def render_html(history: History, comparisons: list[Comparison], threshold: float, baseline: str) -> str:
    """The whole page as a string."""
    first, last = history.runs[0], history.latest
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>so8t benchmarks: {escape(history.machine)}</title><style>{_CSS}</style></head>"
        "<body>"
        f"<h1>so8t benchmarks: {escape(history.machine)}</h1>"
        f"<p>{len(history.runs)} runs from {escape(first.label)} to {escape(last.label)}. "
        f'<span class="muted">{_machine_line(history)}</span></p>'
        '<p id="status" class="muted">(script not run: charts and tables below still show every run)</p>'
        f"{_comparison_section(comparisons, threshold, baseline)}"
        f"{_ratio_section(history)}{_tps_section(history)}{guard_section(history)}"
        f"{_trend_section(history, comparisons)}"
        f"{_runs_section(history)}"
        f'<script type="application/json" id="so8t-raw">{_embedded_json(history, threshold)}</script>'
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
