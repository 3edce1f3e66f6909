"""``so8t.copyhash``: kernel copy (or hard link) + BLAKE3 of the written bytes, and how checkpoints record
the digest.

Expected digests are the BLAKE3 reference test vector (empty input) and the ``blake3`` library's own
single-threaded one-shot hash of the bytes, never a value produced by the code under test.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import shutil
from pathlib import Path

import blake3
import pytest

from so8t import copyhash
from so8t.checkpoint.so8t_dir import SO8TCheckpoint
from so8t.errors import CheckpointError, ConfigError

#: BLAKE3 of the empty input (the reference implementation's test vectors).
BLAKE3_EMPTY = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"


def _payload(size: int) -> bytes:
    return bytes((i * 131 + (i >> 12)) % 251 for i in range(size))


@pytest.fixture()
def small_ranges(monkeypatch):
    """One mmap granularity per range, so a few pages already make a multi-range copy."""
    monkeypatch.setattr(copyhash, "RANGE", mmap.ALLOCATIONGRANULARITY)
    return mmap.ALLOCATIONGRANULARITY


def test_empty_file_has_the_reference_digest(tmp_path: Path):
    (tmp_path / "empty").write_bytes(b"")
    assert copyhash.copy_hashed(tmp_path / "empty", tmp_path / "out" / "empty") == BLAKE3_EMPTY
    assert (tmp_path / "out" / "empty").read_bytes() == b""
    assert copyhash.hash_file(tmp_path / "empty") == BLAKE3_EMPTY


@pytest.mark.parametrize("extra", [0, 1, 4095])
def test_multi_range_copy_is_exact_and_digest_matches(tmp_path: Path, small_ranges: int, extra: int):
    data = _payload(3 * small_ranges + extra)
    src, dst = tmp_path / "src.bin", tmp_path / "sub" / "dst.bin"
    src.write_bytes(data)
    os.chmod(src, 0o640)
    seen: list[int] = []
    digest = copyhash.copy_hashed(src, dst, progress=seen.append)
    assert dst.read_bytes() == data
    assert digest == blake3.blake3(data).hexdigest() == copyhash.hash_file(dst)
    assert sum(seen) == len(data) and len(seen) == 3 + (extra > 0)
    assert (dst.stat().st_mode & 0o777) == 0o640 and dst.stat().st_mtime == src.stat().st_mtime


def test_fallback_when_the_kernel_refuses(tmp_path: Path, small_ranges: int, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    data = _payload(2 * small_ranges + 7)
    (tmp_path / "src").write_bytes(data)
    digest = copyhash.copy_hashed(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == data and digest == blake3.blake3(data).hexdigest()


def test_without_copy_file_range(tmp_path: Path, small_ranges: int, monkeypatch):
    monkeypatch.delattr(os, "copy_file_range")  # not on macOS
    data = _payload(small_ranges + 3)
    (tmp_path / "src").write_bytes(data)
    digest = copyhash.copy_hashed(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == data and digest == blake3.blake3(data).hexdigest()


def test_other_kernel_errors_propagate(tmp_path: Path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "copy_file_range", broken)
    (tmp_path / "src").write_bytes(b"x" * 100)
    with pytest.raises(OSError, match="Input/output error"):
        copyhash.copy_hashed(tmp_path / "src", tmp_path / "dst")


def test_source_that_shrinks_is_a_checkpoint_error(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(os, "copy_file_range", lambda *args, **kwargs: 0)  # end of file too early
    (tmp_path / "src").write_bytes(b"x" * 100)
    with pytest.raises(CheckpointError, match="shrank while it was being copied") as info:
        copyhash.copy_hashed(tmp_path / "src", tmp_path / "dst")
    assert "\n" not in str(info.value) and str(tmp_path / "src") in str(info.value)


def test_a_link_is_the_source_file_and_its_digest(tmp_path: Path):
    data = _payload(5000)
    src, dst = tmp_path / "src.bin", tmp_path / "sub" / "dst.bin"
    src.write_bytes(data)
    seen: list[int] = []
    digest = copyhash.link_hashed(src, dst, progress=seen.append)
    assert os.path.samefile(src, dst) and src.stat().st_nlink == 2
    assert digest == blake3.blake3(data).hexdigest() and seen == [len(data)]


@pytest.mark.parametrize("code", [errno.EXDEV, errno.EPERM, errno.EMLINK])
def test_a_refused_link_is_a_copy(tmp_path: Path, monkeypatch, code: int):
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", refuse)
    data = _payload(3000)
    (tmp_path / "src").write_bytes(data)
    digest = copyhash.link_hashed(tmp_path / "src", tmp_path / "dst")
    assert not os.path.samefile(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst").read_bytes() == data and digest == blake3.blake3(data).hexdigest()


def test_other_link_errors_propagate(tmp_path: Path, monkeypatch):
    def no_copy(*args, **kwargs):
        raise AssertionError("a link error that is not a refusal fell back to a copy")

    monkeypatch.setattr(copyhash, "copy_hashed", no_copy)
    with pytest.raises(FileNotFoundError):
        copyhash.link_hashed(tmp_path / "missing", tmp_path / "dst")
    (tmp_path / "src").write_bytes(b"x")
    (tmp_path / "dst").write_bytes(b"y")
    with pytest.raises(FileExistsError):  # never replaces a file silently
        copyhash.link_hashed(tmp_path / "src", tmp_path / "dst")


def test_sha256_digests_of_older_checkpoints_are_still_computable(tmp_path: Path):
    (tmp_path / "f").write_bytes(b"abc")
    sha256_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 vector
    assert copyhash.hash_file(tmp_path / "f", "sha256") == sha256_abc
    with pytest.raises(ValueError, match="unknown file hash 'md5'"):
        copyhash.hash_file(tmp_path / "f", "md5")


def _with_source_section(so8t_dir: Path, tmp_path: Path, edit) -> Path:
    """A copy of an SO8T checkpoint (weights hard-linked where possible) with its source section edited."""
    out = tmp_path / "ckpt"

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(so8t_dir, out, copy_function=link)
    config = json.loads((so8t_dir / "config.json").read_text())
    edit(config["so8t"]["source"])
    (out / "config.json").unlink()
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_checkpoint_records_blake3_and_reads_older_sha256_ones(so8t_identity_dir: Path, tmp_path: Path):
    assert SO8TCheckpoint(so8t_identity_dir).source_file_hash == "blake3"
    old = _with_source_section(so8t_identity_dir, tmp_path / "old", lambda s: s.pop("hash"))
    assert SO8TCheckpoint(old).source_file_hash == "sha256"  # written before source.hash existed


def test_unknown_source_hash_is_a_one_line_config_error(so8t_identity_dir: Path, tmp_path: Path):
    odd = _with_source_section(so8t_identity_dir, tmp_path, lambda s: s.update(hash="md5"))
    with pytest.raises(ConfigError) as info:
        SO8TCheckpoint(odd).source_file_hash  # noqa: B018 (the property raises)
    message = str(info.value)
    assert "\n" not in message and "so8t.source.hash 'md5' is not a known file hash" in message
    assert "config.json" in message
