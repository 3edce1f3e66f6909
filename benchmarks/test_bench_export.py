"""GGUF export (``so8t export`` / ``SO8TToGGUFConverter``) per quant type, from a random-gate SO8T checkpoint.

Baselines, timed in the same session and interleaved round by round (pedantic's untimed ``setup``):

* text F16 / Q8_0 and "text F16 + mmproj F16": llama.cpp's own ``convert_hf_to_gguf.py`` doing the same
  from the *source* checkpoint (``LLAMA_CPP_CONVERTER``; when unset this baseline is skipped with a
  warning and ``extra_info["baseline"]`` says why). ``ratio_vs_llama_converter`` = ours / theirs
  (target for F16 + mmproj: <= 0.5 with peak RSS <= 1.0 GB).
* K-quants: ``llama_model_quantize`` alone on an F32 text GGUF of the same model (our export encodes
  llama.cpp's mix with ggml's kernels in its single read + fold pass, no intermediate file).
  ``ratio_vs_llama_quantize`` = ours / quantize alone (target <= 1.10). Outside the timing, the last
  round's two files are compared tensor by tensor: same types, same bytes.

* the pipeline's set, text {F16, Q8_0, Q4_K_M} + mmproj F16 (``test_export_set``): what a user would run
  without us, i.e. llama.cpp's converter for text F16 and for the mmproj F16 from the source checkpoint,
  then ``llama_model_quantize`` of that F16 file to Q8_0 and to Q4_K_M; against our one pass.
  ``ratio_vs_llama_tools`` = ours / the sum of those four (target <= 0.8). Needs ``LLAMA_CPP_CONVERTER``.

Before and after each baseline run, ``os.sync()`` writes back what the previous side left dirty (``settled``).
Peak RSS is this process's high-water mark during the export (see conftest); the converter's is its own.
Every test also records where its last round spent its time (``phase_<read|fold|cast|quantize|write|hash>_
cpu_s`` / ``_wall_s``, ``so8t.profile``).
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import pytest

#: Quant types benchmarked, and llama.cpp converter's ``--outtype`` for those it can write itself.
EXPORT_QUANTS = ("F16", "Q8_0", "Q4_0", "Q6_K", "Q4_K_M")
CONVERTER_OUTTYPE = {"F16": "f16", "Q8_0": "q8_0"}
K_QUANTS = ("Q6_K", "Q4_K_M")
MODEL_NAME = "bench"


def export(so8t_dir: Path, out_dir: Path, quant, threads: int, mmproj: bool):
    """Our export of one type (a name) or several (a list) in one pass."""
    from so8t.gguf.export import SO8TToGGUFConverter

    out_dir.mkdir(parents=True, exist_ok=True)
    types = [quant] if isinstance(quant, str) else list(quant)
    return SO8TToGGUFConverter(so8t_dir, progress=False).export(
        out_dir, quant_types=types, model_name=MODEL_NAME, mmproj=mmproj, sidecar=True, n_threads=threads
    )


def settled(setup):
    """``setup`` between two ``sync`` calls: each side starts once the other's files are written back, so
    neither pays for the other's writeback (a converter round leaves 3-4 GB dirty at full size)."""

    def run() -> None:
        os.sync()
        setup()
        os.sync()

    return run


def record_phases(benchmark, report) -> None:
    """Where the last round's export spent its time (``so8t.profile``), as ``phase_<name>`` figures."""
    benchmark.extra_info.update({f"phase_{k}": v for k, v in report.phases.as_dict().items()})


def converter_cmd(script: Path, source: Path, out: Path, outtype: str, mmproj: bool) -> list[str]:
    cmd = [sys.executable, str(script), str(source), "--outfile", str(out), "--outtype", outtype]
    return cmd + ["--mmproj"] if mmproj else cmd


def check_text_gguf(path: Path, quant: str) -> None:
    """Correctness outside the timed call: the file is a qwen2vl GGUF of the requested file type."""
    from gguf import GGUFReader, LlamaFileType

    reader = GGUFReader(path)
    fields = {name: field for name, field in reader.fields.items()}
    arch = fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "qwen2vl"
    file_type = fields["general.file_type"]
    assert int(file_type.parts[file_type.data[0]][0]) == int(LlamaFileType[f"MOSTLY_{quant}"])
    assert reader.tensors, f"{path} has no tensors"


def tensor_inventory(path: Path) -> dict[str, tuple[int, ...]]:
    from gguf import GGUFReader

    return {t.name: tuple(int(d) for d in t.shape) for t in GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def f32_text_gguf(bench, so8t_random, tools):
    """F32 text GGUF of the benchmarked SO8T model: the input of the quantize-alone baseline (untimed)."""
    out = bench.workdir / "export-quantize-source"
    report = export(so8t_random, out, "F32", bench.threads, mmproj=False)
    yield report.texts[0].path
    tools.fresh(out)


def _skip_baseline(benchmark, reason: str) -> None:
    benchmark.extra_info["baseline"] = f"skipped: {reason}"
    warnings.warn(f"baseline skipped: {reason}", stacklevel=2)


@pytest.mark.parametrize("quant", EXPORT_QUANTS)
def test_export_text(benchmark, bench, bench_model, tools, so8t_random, scratch, request, quant):
    out = scratch / f"export-{quant}"
    script = tools.converter_script() if quant in CONVERTER_OUTTYPE else None
    ref_out = scratch / f"export-{quant}-llama-converter.gguf"
    f32_source = request.getfixturevalue("f32_text_gguf") if quant in K_QUANTS else None
    quantized = scratch / f"export-{quant}-quantize-alone.gguf"
    base_seconds: list[float] = []
    base_rss: list[float] = []
    rss = tools.PeakRSS()
    reports = []

    def setup():
        tools.fresh(out)
        if script is not None:
            tools.fresh(ref_out)
            seconds, peak, _ = tools.run_child(
                converter_cmd(script, bench.source, ref_out, CONVERTER_OUTTYPE[quant], mmproj=False)
            )
            base_seconds.append(seconds)
            base_rss.append(peak)
        elif quant in K_QUANTS:
            tools.fresh(quantized)
            start = time.perf_counter()
            tools.llama_quantize_alone(f32_source, quantized, quant, bench.threads)
            base_seconds.append(time.perf_counter() - start)

    def run():
        with rss:
            reports.append(export(so8t_random, out, quant, bench.threads, mmproj=False))

    benchmark.pedantic(run, setup=settled(setup), rounds=bench.rounds, iterations=1, warmup_rounds=0)

    (text,) = reports[-1].texts
    check_text_gguf(text.path, quant)
    assert text.sidecar is not None and text.sidecar.is_file()
    ours = benchmark.stats.stats.median
    info = {
        "model": bench.model,
        "quant": quant,
        "file_size": text.size,
        "peak_rss_mb": round(rss.mb, 1),
        "fallbacks": len(text.fallbacks),
    }
    if script is not None:
        assert tensor_inventory(ref_out) == tensor_inventory(text.path)  # same tensors, names and shapes
        info.update(
            baseline="llama.cpp convert_hf_to_gguf.py from the source checkpoint",
            llama_converter_s=round(tools.median(base_seconds), 4),
            llama_converter_peak_rss_mb=round(max(base_rss), 1),
            ratio_vs_llama_converter=round(ours / tools.median(base_seconds), 3),
        )
    elif quant in K_QUANTS:
        from so8t.gguf.metadata import tensor_digests

        assert tensor_digests(text.path) == tensor_digests(quantized)  # same types, shapes and bytes
        tools.fresh(quantized)
        info.update(
            baseline="llama_model_quantize alone, from an F32 text GGUF",
            quantize_alone_s=round(tools.median(base_seconds), 4),
            ratio_vs_llama_quantize=round(ours / tools.median(base_seconds), 3),
        )
    benchmark.extra_info.update(info)
    record_phases(benchmark, reports[-1])
    if quant in CONVERTER_OUTTYPE and script is None:
        _skip_baseline(
            benchmark, "LLAMA_CPP_CONVERTER is not set (path to llama.cpp's convert_hf_to_gguf.py)"
        )


def test_export_f16_with_mmproj(benchmark, bench, bench_model, tools, so8t_random, scratch):
    """Text F16 + mmproj F16 (+ sidecar): the target is <= 0.5x llama.cpp's converter, peak RSS <= 1 GB."""
    out = scratch / "export-F16-mmproj"
    script = tools.converter_script()
    ref_dir = scratch / "export-F16-mmproj-llama-converter"
    base_seconds: list[float] = []
    base_rss: list[float] = []
    rss = tools.PeakRSS()
    reports = []

    def setup():
        tools.fresh(out)
        if script is None:
            return
        tools.fresh(ref_dir).mkdir()
        text_s, text_rss, _ = tools.run_child(
            converter_cmd(script, bench.source, ref_dir / "t.gguf", "f16", False)
        )
        mm_s, mm_rss, _ = tools.run_child(
            converter_cmd(script, bench.source, ref_dir / "mm.gguf", "f16", True)
        )
        base_seconds.append(text_s + mm_s)
        base_rss.append(max(text_rss, mm_rss))

    def run():
        with rss:
            reports.append(export(so8t_random, out, "F16", bench.threads, mmproj=True))

    benchmark.pedantic(run, setup=settled(setup), rounds=bench.rounds, iterations=1, warmup_rounds=0)

    report = reports[-1]
    (text,) = report.texts
    check_text_gguf(text.path, "F16")
    assert report.mmproj is not None and report.mmproj.is_file()
    ours = benchmark.stats.stats.median
    info = {
        "model": bench.model,
        "quant": "F16",
        "file_size": text.size + report.mmproj.stat().st_size,
        "peak_rss_mb": round(rss.mb, 1),
    }
    if script is not None:
        assert tensor_inventory(ref_dir / "mm.gguf") == tensor_inventory(report.mmproj)
        info.update(
            baseline="llama.cpp convert_hf_to_gguf.py text f16 + --mmproj f16 from the source checkpoint",
            llama_converter_s=round(tools.median(base_seconds), 4),
            llama_converter_peak_rss_mb=round(max(base_rss), 1),
            ratio_vs_llama_converter=round(ours / tools.median(base_seconds), 3),
        )
    benchmark.extra_info.update(info)
    record_phases(benchmark, reports[-1])
    if script is None:
        _skip_baseline(
            benchmark, "LLAMA_CPP_CONVERTER is not set (path to llama.cpp's convert_hf_to_gguf.py)"
        )


#: The pipeline's default text types; the set benchmark times them together with the mmproj.
SET_QUANTS = ("F16", "Q8_0", "Q4_K_M")


def test_export_set(benchmark, bench, bench_model, tools, so8t_random, scratch):
    """Text F16 + Q8_0 + Q4_K_M + mmproj F16 in our one pass, against llama.cpp's tools doing the same."""
    script = tools.converter_script()
    if script is None:
        pytest.skip("LLAMA_CPP_CONVERTER is not set (path to llama.cpp's convert_hf_to_gguf.py)")
    out = scratch / "export-set"
    ref_dir = scratch / "export-set-llama"
    base: list[dict[str, float]] = []
    rss = tools.PeakRSS()
    reports = []

    def setup():
        tools.fresh(out)
        tools.fresh(ref_dir).mkdir()
        steps = {}
        steps["converter_f16_s"], _, _ = tools.run_child(
            converter_cmd(script, bench.source, ref_dir / "F16.gguf", "f16", False)
        )
        steps["converter_mmproj_s"], _, _ = tools.run_child(
            converter_cmd(script, bench.source, ref_dir / "mm.gguf", "f16", True)
        )
        for quant in SET_QUANTS[1:]:
            start = time.perf_counter()
            tools.llama_quantize_alone(ref_dir / "F16.gguf", ref_dir / f"{quant}.gguf", quant, bench.threads)
            steps[f"quantize_{quant}_s"] = time.perf_counter() - start
        base.append(steps)
        for quant in SET_QUANTS:
            assert tensor_inventory(ref_dir / f"{quant}.gguf"), quant
        tools.fresh(ref_dir)  # their files go before our round: both sides write to an equally full disk

    def run():
        with rss:
            reports.append(export(so8t_random, out, list(SET_QUANTS), bench.threads, mmproj=True))

    benchmark.pedantic(run, setup=settled(setup), rounds=bench.rounds, iterations=1, warmup_rounds=0)

    report = reports[-1]
    assert [t.quant for t in report.texts] == list(SET_QUANTS)
    for text in report.texts:
        check_text_gguf(text.path, text.quant)
    assert report.mmproj is not None and report.mmproj.is_file()
    ours = benchmark.stats.stats.median
    totals = [sum(steps.values()) for steps in base]
    theirs = tools.median(totals)
    info = {
        "model": bench.model,
        "quant": "+".join(SET_QUANTS) + "+mmproj",
        "file_size": sum(t.size for t in report.texts) + report.mmproj.stat().st_size,
        "peak_rss_mb": round(rss.mb, 1),
        "baseline": "llama.cpp converter text f16 + --mmproj f16, then llama_model_quantize f16 -> Q8_0, Q4_K_M",
        "llama_tools_s": round(theirs, 4),
        "ratio_vs_llama_tools": round(ours / theirs, 3),
    }
    info.update({step: round(tools.median([b[step] for b in base]), 3) for step in base[0]})  # per step
    benchmark.extra_info.update(info)
    record_phases(benchmark, report)
