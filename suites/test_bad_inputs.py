"""Bad input through the command line: non-zero exit, one line naming the file and the problem (a
traceback only with --verbose), and nothing left at the output path.

Conversion cases come from ``test_convert_errors.CASES`` and run here through ``so8t pipeline`` (the other
command that reads a source checkpoint). Environment failures: a read-only output directory, a full disk
(simulated with RLIMIT_FSIZE in a child process: writes past the limit fail with EFBIG, as ENOSPC would),
and Ctrl-C (SIGINT) in the middle of an export. Corrupt GGUF files are in ``test_bad_gguf_inputs.py``.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from so8t.cli import main
from suites.test_convert_errors import CASES


def nothing_at(out: Path) -> bool:
    """No file at ``out`` and no temporary sibling of it (``.<name>.partial-*``) left behind."""
    return not out.exists() and not any(p.name.startswith(f".{out.name}") for p in out.parent.iterdir())


def one_line_error(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"so8t {command}: error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def small_checkpoint(checkpoint_variant) -> Path:
    return checkpoint_variant(vocab_size=1024)  # two shards + index, hub layout, no real vocabulary


@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c][0] is not None))
def test_pipeline_rejects_broken_checkpoints(case, small_checkpoint, tmp_path, capsys):
    breaker, _, _, _ = CASES[case]
    ckpt = Path(shutil.copytree(small_checkpoint, tmp_path / "source"))
    named = breaker(ckpt)
    out = tmp_path / "out"
    code = main(["pipeline", "--input-model", str(ckpt), "--output-dir", str(out), "--quiet"])
    line = one_line_error(capsys.readouterr().err, "pipeline")
    assert code == 2
    assert named in line
    assert nothing_at(out)


def test_verbose_adds_the_traceback(small_checkpoint, tmp_path, capsys):
    ckpt = Path(shutil.copytree(small_checkpoint, tmp_path / "source"))
    (ckpt / "config.json").unlink()
    code = main(["pipeline", "--input-model", str(ckpt), "--output-dir", str(tmp_path / "o"), "--verbose"])
    assert code == 2
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize("quant", ["Q8_K", "q8_k", "Q3_XYZ"])
def test_unknown_or_unsupported_quant_type(quant, so8t_identity_dir, tmp_path, capsys):
    out = tmp_path / "x.gguf"
    code = main(["export", "--input-model", str(so8t_identity_dir), "--output-gguf", str(out), "--quantization", quant])
    line = one_line_error(capsys.readouterr().err, "export")
    assert code == 2
    assert quant.upper() in line.upper()
    if quant.upper() == "Q8_K":
        assert "Q8_0" in line and "Q6_K" in line  # the message suggests what to use instead
    assert nothing_at(out)


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody may write to: chmod for ordinary users, the immutable flag for root."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(path)], check=False, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"running as root and chattr +i is unavailable here ({done.stderr.strip()})")
        yield path
        subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)


@pytest.mark.parametrize("command", ["convert", "export", "pipeline"])
def test_read_only_output_directory(command, read_only_dir, source_checkpoint, so8t_identity_dir, capsys):
    out = read_only_dir / "out"
    argv = {
        "convert": ["convert", "--input-model", str(source_checkpoint), "--output-model", str(out), "--no-progress"],
        "export": ["export", "--input-model", str(so8t_identity_dir), "--output-gguf", str(out) + ".gguf"],
        "pipeline": ["pipeline", "--input-model", str(source_checkpoint), "--output-dir", str(out), "--quiet"],
    }[command]
    code = main(argv)
    line = one_line_error(capsys.readouterr().err, command)
    assert code == 2
    assert str(read_only_dir) in line and ("writable" in line or "denied" in line or "not permitted" in line)
    assert list(read_only_dir.iterdir()) == []


def _export_cmd(so8t_dir: Path, out: Path, quant: str = "F32") -> list[str]:
    return [sys.executable, "-m", "so8t.cli", "export", "--input-model", str(so8t_dir), "--output-gguf", str(out),
            "--quantization", quant, "--no-mmproj", "--quiet"]


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk_during_export(so8t_identity_dir, tmp_path):
    out = tmp_path / "model.gguf"
    done = subprocess.run(
        _export_cmd(so8t_identity_dir, out), check=False, capture_output=True, text=True, timeout=600,
        preexec_fn=_limit_file_size(8 * 2**20),  # the F32 file is far larger than 8 MiB
    )
    assert done.returncode == 2, done.stderr
    line = one_line_error(done.stderr, "export")
    assert "model.gguf" in line and "too large" in line.lower()
    assert nothing_at(out)


#: ``python -c`` program: ``so8t`` with every chunk write of the GGUF writer followed by a 1 s pause, so
#: once writing has begun the export has seconds left and a Ctrl-C lands mid-file however loaded the machine
#: is (without the pause a small model could finish first: a race the test lost under load). The test
#: interrupts after the first chunk, so the pause costs it about a second.
SLOW_WRITES = """
import signal, sys, time
# A Ctrl-C at a terminal reaches a process whose SIGINT is not ignored; a gate started in the background of a
# non-interactive shell (nohup, `cmd &`) inherits SIGINT ignored, and Python keeps it ignored in every child,
# as it should. The child takes Python's own Ctrl-C handler, as it has at a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)
from so8t.gguf import background
submit = background.OrderedWriter.submit
def slow(self, write, encoded, hasher):
    def paused(data):
        write(data)
        time.sleep(1.0)
    return submit(self, paused, encoded, hasher)
background.OrderedWriter.submit = slow
from so8t.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_during_export_leaves_nothing(so8t_identity_dir, tmp_path):
    out = tmp_path / "model.gguf"
    cmd = [sys.executable, "-c", SLOW_WRITES, *_export_cmd(so8t_identity_dir, out)[3:]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    # Wait until the export is really writing: a temporary sibling of the output has data in it.
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in tmp_path.iterdir() if p.name.startswith(".model.gguf") and p.stat().st_size > 0]
        if partial:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the export finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the export went on for 120 s after Ctrl-C; its stderr: {err[-2000:]!r}")
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert nothing_at(out)
