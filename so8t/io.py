"""Atomic outputs: nothing half-written ever sits at a final path.

``atomic_path(final)`` yields a temporary sibling path (same directory, so the final ``os.replace`` is
atomic on one filesystem). Write a file or a directory there; on normal exit it is renamed to ``final``;
on any exception (including ``KeyboardInterrupt``) the temporary is removed and ``final`` is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from so8t.errors import So8tError


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(final: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; rename it onto ``final`` only if the block succeeds.

    Raises ``So8tError`` if the parent directory is missing or not writable, or if ``final`` exists and
    ``overwrite`` is false.
    """
    final = Path(final)
    parent = final.parent if str(final.parent) else Path(".")
    if not parent.is_dir():
        raise So8tError("output directory does not exist", path=parent)
    if not os.access(parent, os.W_OK):
        raise So8tError("output directory is not writable", path=parent)
    if final.exists() and not overwrite:
        raise So8tError("output already exists", path=final, hint="remove it or pass --overwrite")
    tmp = parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if final.exists() and final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as err:  # disk full, read-only filesystem, permission denied
        _remove(tmp)
        raise So8tError(f"could not write output: {err.strerror or err}", path=final) from err
    except BaseException:  # includes KeyboardInterrupt: leave nothing behind
        _remove(tmp)
        raise


@contextlib.contextmanager
def scratch_path(near: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path of ``near`` that is removed on exit whatever happens (a file the
    caller turns into other outputs, e.g. the whole text GGUF before ``so8t.gguf.split`` cuts it)."""
    near = Path(near)
    tmp = near.parent / f".{near.name}.scratch-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
    finally:
        _remove(tmp)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
