"""Validation of a pipeline's three text files (F16, Q8_0, Q4_K_M with the mmproj and sidecars), as the
pipeline's validate step runs it: one ``SO8TGGUFValidator`` per file, one shared ``ParityReference``.

The export runs once, untimed (setup); the timed call validates all three files. ``extra_info``: the
seconds of each file (``seconds_<TYPE>``), the peak RSS of this process during validation (the streamed
reference and every Python-side check: ``peak_rss_mb``; target at Qwen2-VL-2B size <= 2.5 GB), the peak
RSS of the largest llama.cpp child (``child_peak_rss_mb``: llama.cpp maps the whole GGUF, so it is at least
the file's size), and each file's overall status (asserted PASS: the verdict transfers to every size).
"""

from __future__ import annotations

import resource
import time

TYPES = ("F16", "Q8_0", "Q4_K_M")


def test_validate_pipeline_files(benchmark, bench, tools, scratch):
    from so8t.conversion import Qwen2VLToSO8TConverter
    from so8t.gguf.export import SO8TToGGUFConverter
    from so8t.validation import SO8TGGUFValidator
    from so8t.validation.parity_reference import ParityReference

    so8t_dir = Qwen2VLToSO8TConverter(bench.source, progress=False).convert(scratch / "so8t")
    (scratch / "gguf").mkdir()
    exported = SO8TToGGUFConverter(so8t_dir, progress=False).export(scratch / "gguf", quant_types=list(TYPES))
    rss = tools.PeakRSS()
    reports, seconds = {}, {}

    def run():
        reference = ParityReference(so8t_dir)
        with rss:
            for text in exported.texts:
                start = time.perf_counter()
                reports[text.quant] = SO8TGGUFValidator(text.path, so8t_model=so8t_dir, reference=reference).run()
                seconds[text.quant] = time.perf_counter() - start

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    status = {q: r.overall for q, r in reports.items()}
    assert set(status.values()) == {"PASS"}, {q: r.table() for q, r in reports.items() if r.overall != "PASS"}
    benchmark.extra_info.update({
        "model": bench.model,
        "status": status,
        "peak_rss_mb": round(rss.mb, 1),
        "child_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        **{f"seconds_{q}": round(s, 3) for q, s in seconds.items()},
    })
