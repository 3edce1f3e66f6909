"""SO8T conversion (``so8t convert``): time, peak RSS, and the ratio to a plain copy of the same files,
from a warm and from a cold page cache.

The conversion copies the source shards verbatim (hashing what it wrote) and adds the gates file, so it
should be bounded by disk, not by Python. The baseline, timed in the same session and interleaved round
by round (in pedantic's untimed ``setup``), is a plain ``shutil.copyfile`` of the same shard, index and
aux files (the kernel's zero-copy path). ``extra_info["ratio_vs_copy"] = median(convert) /
median(copy)``: 1.0 means conversion costs exactly a copy.

Before each timed side, ``sync`` writes back what the previous side left dirty, so neither pays for the
other's writeback.

* ``test_convert``: warm page cache; the source files are read once before the first round.
* ``test_convert_cold``: before each side of each round, the source files' pages are
  dropped from the page cache with ``posix_fadvise(POSIX_FADV_DONTNEED)``: only these files, so the
  other processes on the machine keep their cache (``echo 3 > /proc/sys/vm/drop_caches`` would drop
  everything). ``mincore`` checks that the pages are gone (``extra_info["resident_after_evict"]``, the
  largest resident fraction seen before a timed side; the test fails above 5%).

Target (issue 13): conversion at most ``TARGET_RATIO`` (1.5) times the copy, warm and cold, on full-size
checkpoints. A benchmark records figures and asserts correctness only: the ratio and the target go to
``extra_info`` and the nightly regression check judges them (on small models the fixed cost of the gates
file and the config dominates the ratio).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import time
from pathlib import Path

from so8t.checkpoint import CheckpointReader
from so8t.conversion import Qwen2VLToSO8TConverter

#: Issue 13's target for full-size checkpoints: convert <= 1.5 x a plain copy of the same files.
TARGET_RATIO = 1.5
#: A cold round may start with at most this fraction of the source pages still cached.
MAX_RESIDENT_COLD = 0.05


def evict(files: list[Path]) -> None:
    """Write back dirty pages machine-wide, then drop ``files`` (clean, read-only here) from the cache."""
    os.sync()
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_fraction(files: list[Path]) -> float:
    """Fraction of the pages of ``files`` in the page cache (``mincore`` on a read-only mapping)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte))
    resident = total = 0
    for path in files:
        size = path.stat().st_size
        if size == 0:
            continue
        pages = -(-size // mmap.PAGESIZE)
        vector = (ctypes.c_ubyte * pages)()
        # a private (copy-on-write) mapping, never written: ctypes needs a writable buffer for its address
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_COPY) as view:
            first = ctypes.c_char.from_buffer(view)
            status = libc.mincore(ctypes.addressof(first), size, vector)
            del first  # release the buffer export before the mapping closes
        if status != 0:
            raise OSError(ctypes.get_errno(), "mincore failed", str(path))
        resident += sum(b & 1 for b in bytes(vector))
        total += pages
    return resident / total if total else 0.0


def warm(files: list[Path]) -> None:
    for f in files:
        with open(f, "rb") as handle:
            while handle.read(1 << 24):
                pass


def _run(benchmark, bench, tools, scratch, cold: bool) -> None:
    source = bench.source
    reader = CheckpointReader(source)
    files = [*reader.shard_files, *reader.aux_files]
    total_bytes = sum(f.stat().st_size for f in files)
    out = scratch / "convert-so8t"
    copy_dir = scratch / "convert-copy-baseline"
    copy_seconds: list[float] = []
    resident: list[float] = []
    rss = tools.PeakRSS()
    if not cold:
        warm(files)  # untimed: both sides start from a warm page cache

    def start_side() -> None:  # neither side pays for the other's writeback
        if cold:
            evict(files)  # syncs first
            resident.append(resident_fraction(files))
        else:
            os.sync()

    def setup():  # untimed: clean outputs, then time the plain-copy baseline for this round
        tools.fresh(out)
        tools.fresh(copy_dir)
        start_side()
        start = time.perf_counter()
        for f in files:
            target = copy_dir / f.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
        copy_seconds.append(time.perf_counter() - start)
        tools.fresh(copy_dir)
        start_side()

    def convert():
        with rss:
            Qwen2VLToSO8TConverter(source, progress=False).convert(out)

    benchmark.pedantic(convert, setup=setup, rounds=bench.rounds, iterations=1, warmup_rounds=0)
    _check_output(source, out)

    convert_median = benchmark.stats.stats.median
    copy_median = tools.median(copy_seconds)
    ratio = convert_median / copy_median
    benchmark.extra_info.update(
        {
            "model": bench.model,
            "cache": "cold" if cold else "warm",
            "bytes": total_bytes,
            "file_size": tools.dir_size(out),
            "peak_rss_mb": round(rss.mb, 1),
            "throughput_mb_s": round(total_bytes / convert_median / 1e6, 1),
            "copy_s": round(copy_median, 4),
            "ratio_vs_copy": round(ratio, 3),
        }
    )
    if cold:
        benchmark.extra_info["resident_after_evict"] = round(max(resident), 4)
        assert max(resident) <= MAX_RESIDENT_COLD, f"eviction left {max(resident):.1%} of the source cached"
    benchmark.extra_info["target_ratio_vs_copy"] = TARGET_RATIO  # judged by the nightly check, not here


def _check_output(source: Path, out: Path) -> None:
    """Correctness, outside the timed call: shards copied byte for byte, digests of what was written."""
    import blake3

    from so8t.checkpoint.so8t_dir import SO8TCheckpoint
    from so8t.io import sha256_file

    converted = SO8TCheckpoint(out)
    recorded = converted.so8t_config["source"]["files"]
    assert recorded, "the so8t section lists no source files"
    assert converted.source_file_hash == "blake3"
    for name, digest in recorded.items():
        assert sha256_file(out / name) == sha256_file(source / name), name
        reference = blake3.blake3(max_threads=blake3.blake3.AUTO)
        reference.update_mmap(str(out / name))
        assert digest == reference.hexdigest(), name
    assert converted.so8t_config["rotation_init"] == "identity"


def test_convert(benchmark, bench, bench_model, tools, scratch):
    _run(benchmark, bench, tools, scratch, cold=False)


def test_convert_cold(benchmark, bench, bench_model, tools, scratch):
    _run(benchmark, bench, tools, scratch, cold=True)
