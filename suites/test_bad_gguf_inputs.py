"""Corrupt GGUF files through the command line: ``so8t validate`` exits 1 with a last stderr line that
names the file, the failed check and the problem; ``so8t run`` refuses with one line and exit 2.

The damaged files are built with the validator suite's helpers (a small valid qwen2vl GGUF rewritten
through gguf-py, sidecars patched in place); the API-level checks of each case live in test_validator.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFValueType

from so8t.cli import main
from suites.test_validator import _nudge, _patched_sidecar, rewrite_gguf, write_tiny_gguf


@pytest.fixture(scope="module")
def valid_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("valid") / "valid-F16.gguf")


def truncated(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])


def flipped_tensor_byte(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    tensor = next(t for t in GGUFReader(dst).tensors if t.name == "blk.0.attn_output.weight")
    data = bytearray(dst.read_bytes())
    data[int(tensor.data_offset) + 10] ^= 0x40
    dst.write_bytes(bytes(data))


def wrong_architecture(src: Path, dst: Path) -> None:
    rewrite_gguf(src, dst, set_kv={"general.architecture": ("SO8T", GGUFValueType.STRING, None)})


def missing_tensor(src: Path, dst: Path) -> None:
    assert "blk.0.ffn_gate.weight" in {t.name for t in GGUFReader(src).tensors}
    rewrite_gguf(src, dst, drop_tensors=("blk.0.ffn_gate.weight",))


def extra_tensor(src: Path, dst: Path) -> None:
    rewrite_gguf(src, dst, add_tensors={"so8t.safety_head.0.weight": np.zeros((8, 8), dtype=np.float16)})


#: case -> (damage, the failed check the last stderr line must name, a word of the problem)
GGUF_CASES = {
    "truncated": (truncated, "file.readable", "truncated"),
    "flipped byte in tensor data": (flipped_tensor_byte, "tensors.content_hash", "changed"),
    "wrong architecture": (wrong_architecture, "metadata.architecture", "qwen2vl"),
    "missing tensor": (missing_tensor, "tensors.inventory", "blk.0.ffn_gate.weight"),
    "extra tensor": (extra_tensor, "tensors.inventory", "so8t.safety_head.0.weight"),
}


def last_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("so8t validate:")]
    assert lines, err
    assert "Traceback" not in err
    return lines[-1].split("\r")[-1]


@pytest.mark.parametrize("case", sorted(GGUF_CASES))
def test_validate_names_the_damage(case, valid_gguf, tmp_path, capsys):
    damage, check, word = GGUF_CASES[case]
    bad = tmp_path / "bad.gguf"
    damage(valid_gguf, bad)
    report = tmp_path / "report.json"
    assert main(["validate", "--gguf-model", str(bad), "--output-report", str(report), "--no-runtime"]) == 1
    line = last_line(capsys.readouterr().err)
    assert line.startswith("so8t validate: FAIL:") and str(bad) in line and check in line and word in line
    assert report.is_file()  # the report is the product of a failed validation


def test_validate_rejects_a_non_orthogonal_sidecar(gguf_text, tmp_path, capsys):
    text = gguf_text["F16"]
    side = _patched_sidecar(text.sidecar, tmp_path / "side.so8t.gguf", _nudge)
    argv = ["validate", "--gguf-model", str(text.path), "--sidecar", str(side), "--no-runtime",
            "--output-report", str(tmp_path / "r.json")]
    assert main(argv) == 1
    line = last_line(capsys.readouterr().err)
    assert "group.rotations_in_so8" in line and "not orthogonal" in line


def test_validate_rejects_a_sidecar_from_another_model(gguf_text, valid_gguf, tmp_path, capsys):
    argv = ["validate", "--gguf-model", str(valid_gguf), "--sidecar", str(gguf_text["F16"].sidecar),
            "--no-runtime", "--output-report", str(tmp_path / "r.json")]
    assert main(argv) == 1
    line = last_line(capsys.readouterr().err)
    assert "metadata.sidecar_consistency" in line and "another text file" in line


@pytest.mark.parametrize("case", ["truncated", "wrong architecture"])
def test_run_refuses_a_corrupt_file_in_one_line(case, valid_gguf, tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    GGUF_CASES[case][0](valid_gguf, bad)
    assert main(["run", "--model", str(bad), "--prompt", "hello", "--max-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("so8t run: error:") and str(bad) in err[0]
