"""The benchmark dashboard: history loading, regression flags, and the content of the HTML page.

The history is synthetic pytest-benchmark JSON written by ``write_history`` with values chosen by hand:
between run 1 and run 2 the conversion median goes 2.0 s -> 2.5 s (ratio 1.25, a regression at the
default 10% threshold), the Q8_0 export median 1.0 s -> 1.05 s (ratio 1.05, not a regression), and the
Q8_0 generation rate 20 -> 15 tokens/s (ratio 0.75, a regression: higher is better).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
from pathlib import Path

import pytest

from so8t.dashboard import build_dashboard, compare, load_history, render_html
from so8t.errors import So8tError

MACHINE = "Linux-CPython-3.11-64bit"


def _bench(fullname: str, median: float, spread: float, extra: dict | None = None) -> dict:
    return {
        "group": None,
        "name": fullname.split("::")[-1],
        "fullname": fullname,
        "params": None,
        "extra_info": extra or {},
        "stats": {
            "min": median - 2 * spread,
            "max": median + 2 * spread,
            "mean": median,
            "stddev": spread,
            "rounds": 5,
            "median": median,
            "q1": median - spread,
            "q3": median + spread,
            "iqr": 2 * spread,
            "ops": 1 / median,
            "iterations": 1,
        },
    }


CONVERT = "benchmarks/test_bench_convert.py::test_convert"
EXPORT = "benchmarks/test_bench_export.py::test_export[Q8_0]"
INFER = "benchmarks/test_bench_inference.py::test_inference[Q8_0]"
NEW = "benchmarks/test_bench_export.py::test_export[Q6_K]"

RUN1 = {
    "commit": "aaaaaaaa1111111111111111111111111111aaaa",
    "datetime": "2026-11-01T02:00:00+00:00",
    "benchmarks": [
        _bench(CONVERT, 2.0, 0.1),
        _bench(EXPORT, 1.0, 0.05, {"quant": "Q8_0", "file_size": 1_000_000, "peak_rss_mb": 300.0}),
        _bench(
            INFER,
            0.5,
            0.01,
            {"model": "embedded", "quant": "Q8_0", "prompt_tps": 100.0, "gen_tps": 20.0, "ref_gen_tps": 20.2},
        ),
    ],
}
RUN2 = {
    "commit": "bbbbbbbb2222222222222222222222222222bbbb",
    "datetime": "2026-11-02T03:30:00+00:00",
    "benchmarks": [
        _bench(CONVERT, 2.5, 0.1),
        _bench(
            EXPORT,
            1.05,
            0.05,
            {"quant": "Q8_0", "file_size": 1_000_000, "peak_rss_mb": 310.0, "ratio_vs_llama_converter": 0.42},
        ),
        _bench(
            INFER,
            0.5,
            0.01,
            {
                "model": "embedded",
                "quant": "Q8_0",
                "prompt_tps": 104.0,
                "gen_tps": 15.0,
                "ref_gen_tps": 19.9,
                "gen_tps_ratio": 0.754,
            },
        ),
        _bench(NEW, 3.0, 0.2, {"quant": "Q6_K"}),
    ],
}


def run_document(run: dict) -> dict:
    return {
        "machine_info": {
            "node": "vm",
            "cpu": {"brand_raw": "Test CPU", "count": 2},
            "so8t": {"torch": "2.13.0"},
        },
        "commit_info": {
            "id": run["commit"],
            "time": None,
            "dirty": False,
            "project": "so8t",
            "branch": "main",
        },
        "benchmarks": copy.deepcopy(run["benchmarks"]),
        "datetime": run["datetime"],
        "version": "5.3.1",
    }


def write_history(root: Path, runs=(RUN1, RUN2), machine: str = MACHINE) -> Path:
    """Write pytest-benchmark style files under ``root/machine`` and return ``root``."""
    folder = root / machine
    folder.mkdir(parents=True, exist_ok=True)
    for number, run in enumerate(runs, start=1):
        stamp = run["datetime"][:19].replace("-", "").replace(":", "").replace("T", "_")
        name = f"{number:04d}_{run['commit']}_{stamp}.json"
        (folder / name).write_text(json.dumps(run_document(run)), encoding="utf-8")
    return root


@pytest.fixture()
def history_dir(tmp_path: Path) -> Path:
    return write_history(tmp_path / ".benchmarks")


def _rows(html: str) -> dict[tuple[str, str], str]:
    found = re.findall(
        r'<tr class="(\w+)" data-benchmark="([^"]+)" data-metric="(\w+)" data-ratio="([^"]+)">', html
    )
    return {(bench, metric): (cls, ratio) for cls, bench, metric, ratio in found}


def test_history_orders_runs_and_collects_benchmarks(history_dir: Path):
    history = load_history(history_dir)
    assert history.machine == MACHINE
    assert [run.commit[:8] for run in history.runs] == ["aaaaaaaa", "bbbbbbbb"]
    assert [run.number for run in history.runs] == [1, 2]
    assert history.benchmark_names() == [CONVERT, EXPORT, INFER, NEW]
    assert [m.median for _, m in history.series(CONVERT)] == [2.0, 2.5]
    assert len(history.series(NEW)) == 1


def test_regression_flagged_past_threshold_and_not_below(history_dir: Path):
    rows = {(c.benchmark, c.metric.key): c for c in compare(load_history(history_dir), threshold=0.10)}
    assert rows[(CONVERT, "median")].regressed and rows[(CONVERT, "median")].ratio == pytest.approx(1.25)
    assert not rows[(EXPORT, "median")].regressed and rows[(EXPORT, "median")].ratio == pytest.approx(1.05)
    assert rows[(INFER, "gen_tps")].regressed  # 20 -> 15 tokens/s, higher is better
    assert not rows[(INFER, "prompt_tps")].regressed and rows[(INFER, "prompt_tps")].improved is False
    assert not rows[(EXPORT, "peak_rss_mb")].regressed  # 300 -> 310 MB, ratio 1.033
    assert not any(bench == NEW for bench, _ in rows)  # measured once: nothing to compare


def test_threshold_is_configurable(history_dir: Path):
    history = load_history(history_dir)
    loose = [c for c in compare(history, threshold=0.30) if c.regressed]
    assert loose == []  # 1.25 and 0.75 are within 30%
    tight = {(c.benchmark, c.metric.key) for c in compare(history, threshold=0.04) if c.regressed}
    assert (EXPORT, "median") in tight and (CONVERT, "median") in tight


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan")])
def test_bad_threshold_is_an_error(history_dir: Path, bad: float):
    with pytest.raises(So8tError, match="threshold"):
        compare(load_history(history_dir), threshold=bad)


def test_baseline_first_and_by_commit(tmp_path: Path):
    third = copy.deepcopy(RUN2) | {"commit": "cccccccc" + "3" * 32, "datetime": "2026-11-03T01:00:00+00:00"}
    history = load_history(write_history(tmp_path, runs=(RUN1, RUN2, third)))
    by_prev = {(c.benchmark, c.metric.key): c for c in compare(history, baseline="previous")}
    assert by_prev[(CONVERT, "median")].ratio == pytest.approx(1.0)  # run 3 equals run 2
    by_first = {(c.benchmark, c.metric.key): c for c in compare(history, baseline="first")}
    assert by_first[(CONVERT, "median")].ratio == pytest.approx(1.25)
    by_commit = {(c.benchmark, c.metric.key): c for c in compare(history, baseline="aaaaaaaa")}
    assert by_commit[(CONVERT, "median")].baseline_run.commit.startswith("aaaaaaaa")
    with pytest.raises(So8tError, match="no earlier run matches"):
        compare(history, baseline="deadbeef")


def test_partial_run_keeps_each_benchmark_at_its_own_latest(tmp_path: Path):
    only_convert = {
        "commit": "dddddddd" + "4" * 32,
        "datetime": "2026-11-04T01:00:00+00:00",
        "benchmarks": [_bench(CONVERT, 2.0, 0.1)],
    }
    history = load_history(write_history(tmp_path, runs=(RUN1, RUN2, only_convert)))
    rows = {(c.benchmark, c.metric.key): c for c in compare(history)}
    assert rows[(CONVERT, "median")].ratio == pytest.approx(0.8)  # run 3 against run 2
    infer = rows[(INFER, "gen_tps")]  # not in run 3: its latest is still run 2, against run 1
    assert infer.regressed and infer.latest_run.commit.startswith("bbbbbbbb")
    html = render_html(history, list(rows.values()), threshold=0.1, baseline="previous")
    assert '<tr data-model="embedded" data-quant="Q8_0">' in html


def test_html_is_self_contained(history_dir: Path, tmp_path: Path):
    summary = build_dashboard(history_dir, tmp_path / "dashboard.html")
    html = summary.output.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    for needle in ("http://", "https://", "//cdn", "@import", "<script src", '<link rel="stylesheet"'):
        assert needle not in html, needle
    assert re.findall(r'\ssrc="', html) == []  # nothing loaded from anywhere
    assert re.findall(r'href="(?!#|data:)', html) == []
    assert "default-src 'none'" in html  # the page cannot fetch anything even if it tried


def test_html_table_values_and_flags(history_dir: Path, tmp_path: Path):
    summary = build_dashboard(history_dir, tmp_path / "dashboard.html", threshold=0.10)
    html = summary.output.read_text(encoding="utf-8")
    rows = _rows(html)
    assert rows[(CONVERT, "median")] == ("regression", "1.250")
    assert rows[(EXPORT, "median")] == ("ok", "1.050")
    assert rows[(INFER, "gen_tps")] == ("regression", "0.750")
    assert rows[(INFER, "prompt_tps")] == ("ok", "1.040")
    assert '<span id="regression-count">2</span>' in html
    assert ">2.000 s<" in html and ">2.500 s<" in html  # convert medians, baseline and latest
    assert ">1.000 s<" in html and ">1.050 s<" in html
    assert ">20.0 tok/s<" in html and ">15.0 tok/s<" in html
    assert [r.benchmark for r in summary.regressions] == [CONVERT, INFER]
    assert summary.runs == 2 and summary.benchmarks == 4


def test_html_trends_show_every_run_with_commit_and_date(history_dir: Path, tmp_path: Path):
    html = build_dashboard(history_dir, tmp_path / "d.html").output.read_text(encoding="utf-8")
    assert html.count('<svg class="chart trend"') == 4  # one trend per benchmark
    cards = re.findall(r'<div class="card trend-card" data-benchmark="([^"]+)">(.*?)</div>', html)
    convert = dict(cards)[CONVERT]
    assert convert.count('<circle class="point') == 2
    assert 'class="point flagged"' in convert  # the regressed latest point
    assert "aaaaaaaa" in convert and "bbbbbbbb" in convert
    assert "2026-11-01 02:00" in convert and "2026-11-02 03:30" in convert
    assert '<polygon class="band"' in convert
    assert "REGRESSION" in convert and "REGRESSION" not in dict(cards)[EXPORT]


def test_html_tokens_per_second_and_in_run_ratios(history_dir: Path, tmp_path: Path):
    html = build_dashboard(history_dir, tmp_path / "d.html").output.read_text(encoding="utf-8")
    tps = re.search(r'<tr data-model="embedded" data-quant="Q8_0">(.*?)</tr>', html).group(1)
    cells = re.findall(r"<td>([^<]*)</td>", tps)
    assert cells[:5] == ["Q8_0", "104.0", "-", "15.0", "19.9"] and "bbbbbbbb" in cells[5]
    assert html.count('<svg class="chart bars"') == 2  # prompt and generation charts
    assert "Q8_0 SO8T: 15 tokens/s" in html and "Q8_0 unrotated reference: 19.9 tokens/s" in html
    assert "<td>gen_tps_ratio</td><td>0.754</td>" in html
    assert "<h3>model embedded</h3>" in html
    assert "<td>ratio_vs_llama_converter</td><td>0.420</td>" in html


def test_raw_data_embedded_verbatim(history_dir: Path, tmp_path: Path):
    html = build_dashboard(history_dir, tmp_path / "d.html").output.read_text(encoding="utf-8")
    text = re.search(r'<script type="application/json" id="so8t-raw">(.*?)</script>', html, re.DOTALL).group(
        1
    )
    payload = json.loads(text)
    assert payload["machine"] == MACHINE
    assert [run["data"] for run in payload["runs"]] == [run_document(RUN1), run_document(RUN2)]
    assert 'id="download"' in html


def test_names_are_escaped(tmp_path: Path):
    hostile = copy.deepcopy(RUN1)
    hostile["benchmarks"].append(_bench("x.py::test_evil[</script><b>]", 1.0, 0.1, {"note": "</script>"}))
    html = build_dashboard(write_history(tmp_path, runs=(hostile,)), tmp_path / "d.html").output.read_text()
    assert "<b>" not in html and html.count("</script>") == 2  # the two script elements themselves


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "invalid JSON"),
        ("[]", "top level is not a JSON object"),
        (json.dumps({"datetime": "2026-11-01T00:00:00"}), "no 'benchmarks' list"),
        (json.dumps({"benchmarks": [], "datetime": "yesterday"}), "not ISO 8601"),
        (
            json.dumps(
                {"benchmarks": [{"name": "t", "stats": {"q1": 1, "q3": 2}}], "datetime": "2026-11-01"}
            ),
            "stats.median is not a finite number",
        ),
        (json.dumps({"benchmarks": [{"name": "t"}], "datetime": "2026-11-01"}), "no 'stats' object"),
    ],
)
def test_malformed_file_is_one_line_error_naming_it(history_dir: Path, content: str, reason: str):
    bad = history_dir / MACHINE / "0003_cccc_20261103_000000.json"
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(So8tError) as info:
        load_history(history_dir)
    message = str(info.value)
    assert "\n" not in message and bad.name in message and reason in message


def test_several_machines_need_a_choice(tmp_path: Path):
    root = write_history(tmp_path / ".benchmarks")
    write_history(root, runs=(RUN1,), machine="Other-Machine")
    with pytest.raises(So8tError, match="several machines.*--machine"):
        load_history(root)
    assert len(load_history(root, machine="Other-Machine").runs) == 1
    assert len(load_history(root / MACHINE).runs) == 2  # a machine's folder directly
    with pytest.raises(So8tError, match="no history for machine 'nope'"):
        load_history(root, machine="nope")


def test_missing_or_empty_directory(tmp_path: Path):
    with pytest.raises(So8tError, match="does not exist"):
        load_history(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(So8tError, match="no pytest-benchmark JSON files"):
        load_history(tmp_path / "empty")


def _cli(argv: list[str]) -> int:
    """Run the subcommand through its own registration, as so8t.cli.main does."""
    from so8t.cli import dashboard

    parser = argparse.ArgumentParser(prog="so8t")
    dashboard.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_page_and_reports(history_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "page.html"
    assert _cli(["dashboard", str(history_dir), "-o", str(out), "--threshold", "0.3"]) == 0
    assert out.is_file() and "0 regression(s) past 30%" in capsys.readouterr().out
    assert _cli(["dashboard", str(history_dir), "-o", str(out), "--fail-on-regression"]) == 1
    assert "REGRESSION " + CONVERT in capsys.readouterr().err


def test_cli_error_leaves_no_output(history_dir: Path, tmp_path: Path):
    (history_dir / MACHINE / "0009_x_20261109_000000.json").write_text("{", encoding="utf-8")
    out = tmp_path / "page.html"
    with pytest.raises(So8tError, match="0009_x_20261109_000000.json"):
        _cli(["dashboard", str(history_dir), "-o", str(out)])
    assert not out.exists() and list(tmp_path.glob(".page.html*")) == []


def test_render_needs_no_comparison_rows(tmp_path: Path):
    history = load_history(write_history(tmp_path, runs=(RUN1,)))
    html = render_html(history, [], threshold=0.1, baseline="previous")
    assert "nothing to compare yet" in html and html.count('<svg class="chart trend"') == 3
