"""The gate runs on a user's checkpoint exactly as README.md documents it.

``--so8t-model PATH`` is registered by the package's pytest plugin (``so8t.testing.pytest_plugin``, a
``pytest11`` entry point), so a space-separated path parses as the option's value with ``make test
PYTEST_ARGS=...`` and with plain ``pytest`` from the repository root. The subprocess tests run both
commands on a copy of the embedded model placed outside the repository and select the one test below,
which names the checkpoint it gates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from so8t.testing import default_checkpoint
from so8t.testing.pytest_plugin import TOOL_CHECK_SKIP

REPO = Path(__file__).resolve().parents[1]


def test_source_checkpoint_is_the_given_one(request, source_checkpoint, source_reader):
    option = request.config.getoption("--so8t-model")
    expected = Path(option).expanduser() if option else default_checkpoint("tied")
    assert source_checkpoint == expected
    assert source_reader.path == expected
    print(f"so8t gate checkpoint: {source_checkpoint}")


@pytest.mark.parametrize("how", ["make", "pytest"])
def test_documented_command_gates_a_checkpoint_outside_the_repository(how, tmp_path):
    model = Path(shutil.copytree(default_checkpoint("tied"), tmp_path / "user-model"))
    assert REPO not in model.parents
    # -n 0: in this process, so -s shows the print (an xdist worker's output does not reach stdout)
    select = f"-k test_source_checkpoint_is_the_given_one -s -q -n 0 -p no:cacheprovider --basetemp={tmp_path / 'bt'}"
    if how == "make":
        if shutil.which("make") is None:
            pytest.skip("make is not installed")
        cmd = ["make", "--no-print-directory", "test", f"PYTEST_ARGS=--so8t-model {model} {select}"]
    else:
        cmd = [sys.executable, "-m", "pytest", "--so8t-model", str(model), *select.split()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"so8t gate checkpoint: {model}" in done.stdout
    assert "1 passed" in done.stdout


def _collect(args: list[str], cwd: Path) -> tuple[str, list[str]]:
    """(the configfile line, the collected tree) of ``pytest --collect-only ARGS`` run from ``cwd``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    config = next((line for line in lines if line.startswith(("configfile:", "rootdir:"))
                   and "configfile" in line), "no configfile line")
    tree = [line for line in lines if line.lstrip().startswith("<")]
    return config, tree


def test_space_and_equals_forms_collect_the_same_tests(tmp_path):
    """Note [space form] in so8t/testing/pytest_plugin.py: with a space, pytest would take the path for a
    test path (rootdir the checkpoint, no configfile, benchmarks/ collected too); both forms must run with
    the project's configfile and collect the same node ids."""
    model = Path(shutil.copytree(default_checkpoint("tied"), tmp_path / "user-model"))
    spaced = _collect(["--so8t-model", str(model)], REPO)
    joined = _collect([f"--so8t-model={model}"], REPO)
    assert joined[0] == "configfile: pyproject.toml", joined[0]
    assert spaced == joined
    assert joined[1] and not any(line.strip() == "<Dir benchmarks>" for line in joined[1])


@pytest.mark.parametrize("heavy", [False, True])
def test_heavy_tests_skip_on_a_user_checkpoint_unless_asked(pytester_probe, heavy):
    """Marker ``heavy`` (so8t/testing/pytest_plugin.py): always run on the embedded model; on --so8t-model
    skipped, with the reason, unless --so8t-heavy."""
    outcome = pytester_probe(HEAVY_PROBE, ["--so8t-heavy"] if heavy else [])
    if heavy:
        assert "1 passed" in outcome and "skipped" not in outcome
    else:
        assert "1 skipped" in outcome and "runs with --so8t-heavy" in outcome


@pytest.mark.parametrize("asked", [False, True])
def test_tool_checks_skip_on_a_user_checkpoint_unless_asked(pytester_probe, asked):
    """A test whose fixtures never reach ``source_checkpoint`` checks the tool, not the checkpoint: on
    --so8t-model it is skipped, with the reason, unless --so8t-tool-checks; one that reaches it runs."""
    outcome = pytester_probe(TOOL_PROBE, ["--so8t-tool-checks"] if asked else [])
    if asked:
        assert "2 passed" in outcome and "skipped" not in outcome
    else:
        assert "1 passed, 1 skipped" in outcome and TOOL_CHECK_SKIP in outcome


def test_every_benchmark_reads_the_checkpoint_under_test():
    """``pytest benchmarks --so8t-model PATH`` (docs/benchmarks.md, ``make nightly``) benchmarks that checkpoint:
    no benchmark is taken for a check of the tool and skipped. ``--setup-plan`` runs the plugin's setup hook
    on every benchmark without running one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    args = [sys.executable, "-m", "pytest", "benchmarks", f"--so8t-model={default_checkpoint('tied')}",
            "--setup-plan", "-p", "no:cacheprovider", "-rs", "-q"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "SETUP    S source_checkpoint" in done.stdout
    assert "skipped" not in done.stdout and TOOL_CHECK_SKIP not in done.stdout, done.stdout[-2000:]


#: A stand-in for the suites' ``source_checkpoint`` fixture: what makes a probe a check of the checkpoint.
PROBE_FIXTURE = "import pytest\n\n@pytest.fixture\ndef source_checkpoint():\n    return None\n\n"
HEAVY_PROBE = PROBE_FIXTURE + "@pytest.mark.heavy\ndef test_probe(source_checkpoint):\n    pass\n"
TOOL_PROBE = (PROBE_FIXTURE + "def test_reads_the_checkpoint(source_checkpoint):\n    pass\n\n"
              "def test_of_the_tool():\n    pass\n")


@pytest.fixture
def pytester_probe(tmp_path):
    """Runs a probe test file with --so8t-model (the embedded checkpoint's path, as a user's) and ``extra``
    options; returns its output."""

    def run(text: str, extra: list[str]) -> str:
        probe = tmp_path / "test_probe.py"
        probe.write_text(text)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        args = [sys.executable, "-m", "pytest", str(probe), f"--so8t-model={default_checkpoint('tied')}",
                "-n", "0", "-p", "no:cacheprovider", "-rs", "-q", f"--rootdir={tmp_path}", *extra]
        done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env, check=False)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    return run
