"""Copy (or hard-link) a file and hash the bytes that landed at the destination (BLAKE3).

``copy_hashed(src, dst)`` copies ``src`` range by range with ``os.copy_file_range`` (page cache to page
cache, no trip through Python; a plain ``pread``/``pwrite`` loop where the kernel refuses) and hashes each
copied range of ``dst``, read back through ``mmap`` from the page cache, on a second thread one range
behind the copy. The digest therefore describes the destination file's bytes exactly, as the previous
read-hash-write loop did, while the copy costs what ``shutil.copyfile`` costs.

Digest: BLAKE3 (hex, 64 characters), because SHA-256 runs at about 2 GB/s on one core even with SHA-NI
and cannot be split across threads, which made the conversion of a 4.4 GB checkpoint sha256-bound
(3.2x a plain copy); BLAKE3 is made for this (SIMD, tree mode, several GB/s per core). ``HASH_NAME``
is recorded next to the digests so readers know which function made them.

Errors: a source that changes size during the copy is a ``CheckpointError``; I/O errors propagate as
``OSError`` (the caller writes into a temporary directory that is removed on any error).
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from so8t.errors import CheckpointError

#: Name of the digest recorded with every hash this module makes.
HASH_NAME = "blake3"

#: Bytes per copied (and hashed) range; a multiple of the mmap granularity.
RANGE = 64 << 20

#: os.link errors that mean "no hard link here" (another filesystem, no link support or permission, too many
#: links): the file is copied instead.
_NO_LINK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOSYS}

#: copy_file_range errors that mean "not here" (old kernel, another filesystem, special file): fall back.
_FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EPERM, errno.EBADF}


def hash_threads() -> int:
    """Hashing threads: every usable CPU but one, which the kernel copy keeps busy (at least 1)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, usable - 1)


def new_hasher():
    """An incremental BLAKE3 hasher with ``hash_threads()`` threads (1 on a 2-CPU machine)."""
    return blake3.blake3(max_threads=hash_threads())


#: Digests a checkpoint may record: this module's, and the sha256 of checkpoints written before it.
KNOWN_HASHES = (HASH_NAME, "sha256")


def hash_file(path: str | Path, name: str = HASH_NAME) -> str:
    """Hex digest of a file with ``name`` (one of ``KNOWN_HASHES``); BLAKE3 is memory-mapped and threaded."""
    if name == "sha256":
        from so8t.io import sha256_file

        return sha256_file(path)
    if name != HASH_NAME:
        raise ValueError(f"unknown file hash {name!r}")
    hasher = new_hasher()
    if Path(path).stat().st_size:
        hasher.update_mmap(str(path))
    return hasher.hexdigest()


def _copy_range(fin: int, fout: int, offset: int, count: int, kernel: list[bool], src: Path) -> None:
    """Copy ``count`` bytes at ``offset`` from ``fin`` to the same offset of ``fout``.

    ``kernel`` is a one-element flag: True while ``copy_file_range`` works, set False on the first
    refusal so the rest of the file uses ``pread``/``pwrite``."""
    done = 0
    while done < count:
        if kernel[0]:
            try:
                n = os.copy_file_range(fin, fout, count - done, offset + done, offset + done)
            except OSError as err:
                if err.errno not in _FALLBACK_ERRNOS:
                    raise
                kernel[0] = False
                continue
        else:
            block = os.pread(fin, min(count - done, 16 << 20), offset + done)
            n = len(block)
            view = memoryview(block)
            while view:
                view = view[os.pwrite(fout, view, offset + done + len(block) - len(view)) :]
        if n == 0:
            raise CheckpointError("file shrank while it was being copied", path=src)
        done += n


def _hash_range(hasher, fd: int, offset: int, count: int) -> None:
    with mmap.mmap(fd, count, offset=offset, access=mmap.ACCESS_READ) as view:
        hasher.update(view)


def copy_hashed(src: str | Path, dst: str | Path, progress: Callable[[int], object] | None = None) -> str:
    """Copy ``src`` to ``dst`` (parents created, mode and times copied); return the hex BLAKE3 of ``dst``.

    ``progress(n)`` is called after each copied range with its size in bytes."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    hasher = new_hasher()
    kernel = [hasattr(os, "copy_file_range")]  # Linux only; elsewhere pread/pwrite from the start
    with (
        open(src, "rb") as fin,
        open(dst, "wb+") as fout,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="so8t-blake3") as pool,
    ):
        size = os.fstat(fin.fileno()).st_size
        pending = None
        for offset in range(0, size, RANGE):
            count = min(RANGE, size - offset)
            _copy_range(fin.fileno(), fout.fileno(), offset, count, kernel, src)
            if pending is not None:
                pending.result()  # ranges are hashed strictly in order
            pending = pool.submit(_hash_range, hasher, fout.fileno(), offset, count)
            if progress is not None:
                progress(count)
        if pending is not None:
            pending.result()
        if os.fstat(fin.fileno()).st_size != size:
            raise CheckpointError("file changed size while it was being copied", path=src)
    shutil.copystat(src, dst)
    return hasher.hexdigest()


def link_hashed(src: str | Path, dst: str | Path, progress: Callable[[int], object] | None = None) -> str:
    """Hard-link ``dst`` to ``src`` (parents created); return the hex BLAKE3 of their bytes.

    Where the filesystem refuses the link (``dst`` on another filesystem, no hard links there) this is
    ``copy_hashed``. A link costs no disk and no copy, but both names are then one file: an edit of either
    in place changes the other (so8t never writes a checkpoint's weight files in place; it writes new files
    and renames them). ``progress(n)`` is called once with the file's size."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # follows a symlinked source (a hub cache's blob), as the copy reads through it
    except OSError as err:
        if err.errno not in _NO_LINK_ERRNOS:
            raise
        return copy_hashed(src, dst, progress)
    digest = hash_file(dst)
    if progress is not None:
        progress(dst.stat().st_size)
    return digest
