"""suites/fixtures/release.py: a session file is deleted in the teardown of the last test that uses it, in
the run's own order and selection, and not before."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CONFTEST = '''
import pytest
from suites.fixtures.release import release_after_last_use

pytest_plugins = ["suites.fixtures.release"]


@pytest.fixture(scope="session")
def big(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(b"x" * 1024)
    return release_after_last_use(request, path)


@pytest.fixture(scope="session")
def seen():
    return {}
'''

TESTS = '''
def test_1(big, seen):
    seen["big"] = big
    assert big.exists()


def test_2(big):
    assert big.exists()


def test_3(seen):
    assert not seen["big"].exists(), "released after its last user"
'''


@pytest.mark.parametrize("select", [[], ["-k", "not test_2"]])
def test_a_file_is_released_after_its_last_user(tmp_path, select):
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_release_probe.py").write_text(textwrap.dedent(TESTS))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           f"--basetemp={tmp_path / 'bt'}", *select, str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert ("3 passed" if not select else "2 passed") in done.stdout
