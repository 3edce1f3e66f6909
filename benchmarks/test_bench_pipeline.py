"""The whole pipeline (``so8t pipeline``): environment + input check, convert, export, validate.

Runs ``so8t.pipeline.run.run_pipeline`` with its default quant types (F16, Q8_0, Q4_K_M, plus mmproj and
sidecars) and validation on. It is the longest benchmark, so it runs one round unless
``--so8t-bench-rounds`` is given. ``extra_info`` records every step's own time (``step_<name>_s``), the
total size of the output files and the peak RSS. No external baseline exists for the whole pipeline; the
per-step baselines are in the convert and export benchmarks.
"""

from __future__ import annotations

import json


def test_pipeline(benchmark, bench, bench_model, tools, scratch):
    from so8t.pipeline.run import SUMMARY_FILE, PipelineOptions, run_pipeline

    out = scratch / "pipeline"
    rss = tools.PeakRSS()
    results = []

    def setup():
        tools.fresh(out)

    def run():
        options = PipelineOptions(input_model=bench.source, output_dir=out, progress=False)
        with rss:
            results.append(run_pipeline(options, log=lambda _line: None))

    rounds = bench.rounds if bench.rounds_given else 1
    benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)

    result = results[-1]
    validation = {f.quant: f.validation for f in result.files if f.kind == "text"}
    # float types: derived rounding bound; block types: relative to llama.cpp's quantization of the same
    # source (so8t/gguf/parity.py), so the verdict holds at every size
    assert result.ok and set(validation.values()) == {"PASS"}, validation
    assert json.loads((out / SUMMARY_FILE).read_text())["ok"] is True
    assert {f.kind for f in result.files} >= {"text", "sidecar", "mmproj"}
    info = {
        "model": bench.model,
        "validation": validation,
        "quant_types": sorted(validation),
        "file_size": sum(f.size for f in result.files),
        "peak_rss_mb": round(rss.mb, 1),
    }
    for step in result.steps:
        key = "step_" + "".join(c if c.isalnum() else "_" for c in step.name.lower()).strip("_") + "_s"
        info[key] = round(step.seconds, 3)
    benchmark.extra_info.update(info)
