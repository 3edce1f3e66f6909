"""The dashboard renders in a real browser (headless Chromium, Debian's ``chromium`` package).

The page is opened from ``file://`` with networking features off and a fresh profile; ``--dump-dom``
returns the DOM after the inline script ran, and ``--enable-logging=stderr`` prints every console message
(errors, uncaught exceptions, Content-Security-Policy violations) as a ``CONSOLE`` line. The dashboard
logs nothing on purpose, so any such line is a failure. A control page with a deliberate error proves the
capture works. The test installs nothing: without chromium it skips and says how to install it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from so8t.dashboard import build_dashboard
from suites.test_dashboard import CONVERT, RUN1, RUN2, write_history

CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).exists()), None
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium not found at /usr/bin/chromium (install it: apt-get install -y chromium)",
)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
)


def render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """(DOM after scripts ran, console lines) for a page opened from file://."""
    result = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console


def test_capture_sees_console_errors(tmp_path: Path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><script>noSuchFunction();</script></body></html>")
    _, console = render(page, tmp_path / "profile")
    assert any("noSuchFunction" in line for line in console), console


def test_dashboard_shows_runs_without_console_errors(tmp_path: Path):
    third = dict(RUN2, commit="cccccccc" + "3" * 32, datetime="2026-11-03T04:45:00+00:00")
    history = write_history(tmp_path / ".benchmarks", runs=(RUN1, RUN2, third))
    page = build_dashboard(history, tmp_path / "dashboard.html").output
    dom, console = render(page, tmp_path / "profile")
    assert console == []
    assert 'data-ready="yes"' in dom  # the inline script ran to its end
    assert re.search(r'id="status"[^>]*>Loaded 3 runs, 4 benchmarks\.<', dom)
    assert re.search(r'id="download" href="blob:[^"]+" download="so8t-benchmarks-[^"]+\.json"', dom)
    assert dom.count('<tr class="run">') == 3
    card = re.search(r'data-benchmark="' + re.escape(CONVERT) + r'">(.*?)</svg>', dom, re.DOTALL).group(1)
    assert card.count("<circle") == 3
    for commit, date in (
        ("aaaaaaaa", "2026-11-01 02:00"),
        ("bbbbbbbb", "2026-11-02 03:30"),
        ("cccccccc", "2026-11-03 04:45"),
    ):
        assert commit in card and date in card
