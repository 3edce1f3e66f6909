"""SO8T conversion (``so8t convert``): time, peak RSS, and the ratio to a plain copy of the same files.

The conversion copies the source shards verbatim (hashing them on the way) and adds the gates file, so
it should be bounded by disk, not by Python. The baseline, timed in the same session and interleaved
round by round (in pedantic's untimed ``setup``), is a plain ``shutil.copyfile`` of the same shard, index
and aux files (the kernel's zero-copy path). ``extra_info["ratio_vs_copy"] = median(convert) /
median(copy)``: 1.0 means conversion costs exactly a copy. The source files are read once before
the first round, so both sides start from a warm page cache.
"""

from __future__ import annotations

import shutil
import time

from so8t.checkpoint import CheckpointReader
from so8t.convert import Qwen2VLToSO8TConverter


def test_convert(benchmark, bench, bench_model, tools, scratch):
    source = bench.source
    reader = CheckpointReader(source)
    files = [*reader.shard_files, *reader.aux_files]
    total_bytes = sum(f.stat().st_size for f in files)
    out = scratch / "convert-so8t"
    copy_dir = scratch / "convert-copy-baseline"
    copy_seconds: list[float] = []
    rss = tools.PeakRSS()
    for f in files:  # untimed: both sides start from a warm page cache
        with open(f, "rb") as handle:
            while handle.read(1 << 24):
                pass

    def setup():  # untimed: clean outputs, then time the plain-copy baseline for this round
        tools.fresh(out)
        tools.fresh(copy_dir)
        start = time.perf_counter()
        for f in files:
            target = copy_dir / f.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
        copy_seconds.append(time.perf_counter() - start)
        tools.fresh(copy_dir)

    def convert():
        with rss:
            Qwen2VLToSO8TConverter(source, progress=False).convert(out)

    benchmark.pedantic(convert, setup=setup, rounds=bench.rounds, iterations=1, warmup_rounds=0)

    # correctness, outside the timed call: the shards were copied byte for byte and gates are identity
    from so8t.checkpoint.so8t_dir import SO8TCheckpoint
    from so8t.io import sha256_file

    converted = SO8TCheckpoint(out)
    recorded = converted.so8t_config["source"]["files"]
    assert recorded, "the so8t section lists no source files"
    for name, digest in recorded.items():
        assert sha256_file(out / name) == digest == sha256_file(source / name), name
    assert converted.so8t_config["rotation_init"] == "identity"

    convert_median = benchmark.stats.stats.median
    copy_median = tools.median(copy_seconds)
    benchmark.extra_info.update(
        {
            "model": bench.model,
            "bytes": total_bytes,
            "file_size": tools.dir_size(out),
            "peak_rss_mb": round(rss.mb, 1),
            "throughput_mb_s": round(total_bytes / convert_median / 1e6, 1),
            "copy_s": round(copy_median, 4),
            "ratio_vs_copy": round(convert_median / copy_median, 3),
        }
    )
