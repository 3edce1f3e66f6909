"""Reading a text GGUF's metadata and tensor table: ``so8t.gguf.metadata.read_gguf`` vs gguf-py's reader.

``read_gguf`` is a hand-written single-pass header parser kept next to gguf-py's ``GGUFReader`` only
because of this benchmark: ``GGUFReader`` builds one numpy view per array element, so turning a text
GGUF's metadata (151,936 tokens, token types and 151,387 merges) into Python values takes tens of
seconds, against well under one for ``read_gguf``. Baseline, timed once in the first round's untimed
``setup``: ``GGUFReader(path)`` plus ``contents()`` of every field. ``ratio_vs_gguf_reader`` = ours /
theirs (the parser is worth keeping while this stays far below 1). Outside the timing, both readers must
give the same keys, values and tensor table.
"""

from __future__ import annotations

import time


def _gguf_reader_table(path):
    from gguf import GGUFReader

    reader = GGUFReader(path)
    kv = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = [
        (t.name, int(t.tensor_type), tuple(int(d) for d in t.shape), int(t.data_offset))
        for t in reader.tensors
    ]
    return kv, tensors


def test_read_gguf_header(benchmark, bench, bench_model, so8t_random, scratch):
    from so8t.gguf.export import SO8TToGGUFConverter
    from so8t.gguf.metadata import read_gguf

    report = SO8TToGGUFConverter(so8t_random, progress=False).export(
        scratch, quant_types=["F16"], model_name="bench-read", mmproj=False, sidecar=False
    )
    path = report.texts[0].path
    base_seconds: list[float] = []
    theirs = []

    def setup():
        if not base_seconds:
            start = time.perf_counter()
            theirs.append(_gguf_reader_table(path))
            base_seconds.append(time.perf_counter() - start)

    tables = []
    benchmark.pedantic(lambda: tables.append(read_gguf(path)), setup=setup, rounds=bench.rounds, iterations=1)

    ours = tables[-1]
    kv, tensors = theirs[0]
    assert ours.kv == kv
    assert [(t.name, t.ggml_type, t.dims, t.offset) for t in ours.tensors] == tensors
    benchmark.extra_info.update(
        model=bench.model,
        baseline="gguf.GGUFReader(path) + contents() of every field",
        gguf_reader_s=round(base_seconds[0], 3),
        ratio_vs_gguf_reader=round(benchmark.stats.stats.median / base_seconds[0], 4),
    )


def test_open_gguf(benchmark, bench, bench_model, so8t_random, scratch):
    """``so8t.gguf.reader.open_gguf`` (the validator's reader) vs a stock ``GGUFReader`` parse of the same
    text GGUF, timed once untimed in ``setup``: ``ratio_vs_gguf_reader`` = ours / theirs."""
    from gguf import GGUFReader

    from so8t.gguf.export import SO8TToGGUFConverter
    from so8t.gguf.reader import open_gguf

    report = SO8TToGGUFConverter(so8t_random, progress=False).export(
        scratch, quant_types=["Q8_0"], model_name="bench-open", mmproj=False, sidecar=False
    )
    path = report.texts[0].path
    base_seconds: list[float] = []

    def setup():
        if not base_seconds:
            start = time.perf_counter()
            GGUFReader(path)
            base_seconds.append(time.perf_counter() - start)

    benchmark.pedantic(lambda: open_gguf(path), setup=setup, rounds=bench.rounds, iterations=1)
    benchmark.extra_info.update(
        model=bench.model,
        baseline="gguf.GGUFReader(path)",
        gguf_reader_s=round(base_seconds[0], 3),
        ratio_vs_gguf_reader=round(benchmark.stats.stats.median / base_seconds[0], 4),
    )
