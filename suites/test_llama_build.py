"""llama.cpp on the CPUs users have: the AMX decision, the load that applies it, and crash isolation.

Note [AMX] in so8t/llama/build.py: a build that reports ``AMX_INT8 = 1`` crashes in ggml's AMX extra
buffer on the first quantized matrix product, so so8t loads with extra buffer types off there, and only
there (CPU_REPACK keeps speeding Q4_0 / Q4_K elsewhere). The decision is a function of the build's
reported features, tested here with both answers; the load test checks, on the installed build, which
buffers llama.cpp actually used (its own load log). A native crash must cost one test, not the gate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from so8t.llama import build as llama_build

ROOT = Path(__file__).resolve().parent.parent

# llama_print_system_info() of llama-cpp-python 0.3.36 built with GGML_NATIVE=ON on a Sapphire Rapids Xeon
# (the AMX case) and on this project's AVX-512 AMD machine (no AMX), in llama.cpp's own format.
AMX_BUILD = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
             "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | "
             "OPENMP = 1 | REPACK = 1 | ")
AVX512_BUILD = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
                "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
#: what a terminal line may take (crash reports, the pipeline's notes)
TERMINAL = 160


def test_features_parse_llama_cpp_system_info():
    parsed = llama_build.features(AMX_BUILD + "BLAS : ACCELERATE = 1 | ")
    assert list(parsed) == ["CPU", "BLAS"]
    assert parsed["CPU"]["AMX_INT8"] == "1" and parsed["CPU"]["REPACK"] == "1" and parsed["BLAS"] == {"ACCELERATE": "1"}
    assert "AMX_INT8" in llama_build.enabled(AMX_BUILD) and "AMX_INT8" not in llama_build.enabled(AVX512_BUILD)
    assert llama_build.features("") == {}


@pytest.mark.parametrize(("info", "override", "allowed"), [
    (AMX_BUILD, None, False),      # the crashing build: extra buffers off
    (AMX_BUILD, "auto", False),
    (AVX512_BUILD, None, True),    # everywhere else: llama.cpp's default, CPU_REPACK stays
    (AVX512_BUILD, "0", False),    # the user's override wins both ways
    (AMX_BUILD, "1", True),
])
def test_extra_buffers_are_off_exactly_on_amx_builds(info, override, allowed):
    decision = llama_build.extra_bufts_decision(info, override)
    assert decision.allowed is allowed, decision
    assert decision.reason


def test_a_bad_override_is_one_line_naming_the_variable():
    with pytest.raises(ValueError, match="SO8T_LLAMA_EXTRA_BUFTS='maybe'"):
        llama_build.extra_bufts_decision(AVX512_BUILD, "maybe")


def test_a_crash_line_names_signal_build_and_fix():
    amx = llama_build.crash_line(-11, "a load and a short inference", AMX_BUILD,
                                 llama_build.extra_bufts_decision(AMX_BUILD, "1"))
    assert "SIGSEGV" in amx and "AMX_INT8" in amx and "SO8T_LLAMA_EXTRA_BUFTS=0" in amx and "#20824" in amx
    other = llama_build.crash_line(-6, "an image prompt with the mmproj", AVX512_BUILD,
                                   llama_build.extra_bufts_decision(AVX512_BUILD, None))
    assert "SIGABRT" in other and "AVX512" in other and "SO8T_LLAMA_EXTRA_BUFTS=0" in other
    off = llama_build.crash_line(-11, "a load", AMX_BUILD, llama_build.extra_bufts_decision(AMX_BUILD, None))
    assert "known AMX crash" not in off  # extra buffers were already off: not the known case
    for line in (amx, other, off):
        assert "\n" not in line and len(line) <= TERMINAL, (len(line), line)


def _load_log(path: Path, monkeypatch, override: str | None) -> str:
    from so8t.llama import api as llama_api

    if override is None:
        monkeypatch.delenv(llama_build.EXTRA_BUFTS_ENV, raising=False)
    else:
        monkeypatch.setenv(llama_build.EXTRA_BUFTS_ENV, override)
    pieces: list[str] = []
    with llama_api.captured_log(pieces):
        llm = llama_api.load(path, n_ctx=64, n_threads=1)
    llm.close()
    return "".join(pieces)


@pytest.mark.llama
def test_the_load_uses_the_buffers_the_decision_allows(gguf_text, monkeypatch):
    """On the installed build, llama.cpp's own load log: no AMX buffer whenever the decision turns extra
    buffers off (on an AMX build that is the default, and without this mechanism the log shows ``AMX model
    buffer``); CPU_REPACK still holds the Q4_0 weights where the build has it and the decision allows it."""
    path = gguf_text["Q4_0"].path
    info = llama_build.system_info()
    auto = _load_log(path, monkeypatch, None)
    off = _load_log(path, monkeypatch, "0")
    assert "model buffer size" in off, off[-2000:]
    assert "AMX model buffer" not in off and "CPU_REPACK model buffer" not in off, off[-2000:]
    decision = llama_build.extra_bufts_decision(info)
    if not decision.allowed:
        assert "AMX model buffer" not in auto, auto[-2000:]
    elif "REPACK" in llama_build.enabled(info) and {"AVX2", "AVX512"} & set(llama_build.enabled(info)):
        assert "CPU_REPACK model buffer" in auto, auto[-2000:]  # other machines keep their fast path


@pytest.mark.llama
@pytest.mark.skipif(
    any(f in llama_build.enabled(llama_build.system_info()) for f in llama_build.CRASHING_EXTRA_BUFTS),
    reason="this llama.cpp build has AMX_INT8: turning extra buffers on is the known crash (Note [AMX] in "
    "so8t/llama/build.py), so there is no second set of logits to compare",
)
def test_a_loaded_file_gives_the_same_logits_with_and_without_extra_buffers(gguf_text, parity_ids, monkeypatch):
    """Turning extra buffers off changes where weights live and which kernels run, not what the file means.

    Q8_0 gives the same logits bit for bit. Q4_0's repacked kernels are a different, equally valid
    computation of the same quantized product: they may move the logits, but by less than the Q4_0 rounding
    itself moves them (the F32 file, measured in the same run). Half is a margin over what was measured:
    0.037 of it on the user-like variant, 0.198 on real weights with random gates, whose logits are far more
    sensitive (docs/reference.md section 12), less on the embedded model."""
    import numpy as np

    from so8t.llama.runtime import LlamaRuntime

    def logits(quant: str, override: str) -> np.ndarray:
        monkeypatch.setenv(llama_build.EXTRA_BUFTS_ENV, override)
        with LlamaRuntime(gguf_text[quant].path, n_ctx=256, n_threads=2, f32_kv=True) as rt:
            return rt.logits(parity_ids).astype(np.float64)

    assert np.array_equal(logits("Q8_0", "0"), logits("Q8_0", "1"))
    off, on, exact = logits("Q4_0", "0"), logits("Q4_0", "1"), logits("F32", "0")
    assert np.abs(on - off).max() <= 0.5 * np.abs(off - exact).max()


def test_a_native_crash_is_one_failed_test_and_the_gate_goes_on(tmp_path):
    """The gate's own configuration (pyproject addopts, ``-n 1``): a test that kills its process with
    SIGSEGV is reported FAILED with the crash, and the tests after it still run."""
    test_file = tmp_path / "test_crashes.py"
    test_file.write_text(textwrap.dedent("""
        import os, signal

        def test_a_native_crash():
            os.kill(os.getpid(), signal.SIGSEGV)

        def test_after_the_crash():
            assert os.getpid() > 0
    """))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
         "-p", "no:cacheprovider", str(test_file)],
        check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "1 failed, 1 passed" in out, out[-3000:]
    assert "crashed while running" in out and "test_a_native_crash" in out, out[-3000:]
    assert "Segmentation fault" in out, out[-3000:]  # faulthandler names the signal


def test_a_crashed_llama_child_is_one_line_with_the_build(tmp_path, monkeypatch):
    """The validator's llama.cpp child dies by SIGSEGV: the check FAILs with one terminal line naming the
    signal, the build's features (as the child recorded them) and the known fix."""
    from so8t.validation import checks_runtime
    from so8t.validation.context import CheckFailed

    real_run = subprocess.run

    def crashing_child(cmd, **kwargs):
        out_dir = cmd[-1]
        decision = llama_build.extra_bufts_decision(AMX_BUILD, "1")
        Path(out_dir, checks_runtime.BUILD_FILE).write_text(json.dumps(
            {"system_info": AMX_BUILD, "decision": {"allowed": decision.allowed, "reason": decision.reason}}))
        crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
        return real_run([sys.executable, "-c", crash], **kwargs)

    monkeypatch.setattr(checks_runtime.subprocess, "run", crashing_child)
    with pytest.raises(CheckFailed) as info:
        checks_runtime.run_text_probe(Path("model.gguf"), str(tmp_path))
    line = info.value.reason
    assert "SIGSEGV" in line and "AMX_INT8" in line and "SO8T_LLAMA_EXTRA_BUFTS=0" in line, line
    assert "\n" not in line and len(line) <= TERMINAL, (len(line), line)
