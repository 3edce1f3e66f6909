"""What the installed llama.cpp was built with, and the one load-time decision that depends on it.

``llama_print_system_info()`` lists each backend's compile-time features, ``"CPU : SSE3 = 1 | AVX2 = 1 |
... | AMX_INT8 = 1 | REPACK = 1 | "``. :func:`features` parses that string; everything else here is a pure
function of the parsed features, so it is testable on any machine with either answer.

Note [AMX]: a llama-cpp-python built with its default ``GGML_NATIVE=ON`` on an Intel CPU with AMX
(Sapphire Rapids and later, ``amx_int8`` in ``/proc/cpuinfo``) compiles ggml's AMX code (``-march=native``
defines ``__AMX_INT8__`` whatever the ``GGML_AMX_*`` options say). At load, llama.cpp then moves every
quantized weight into the ``AMX`` *extra buffer type*, and the first matrix product through it crashes the
process with SIGSEGV (llama.cpp issue #20824, closed without a fix; docs/reference.md section 12). Loading
with ``llama_model_params.use_extra_bufts = false`` keeps the weights in plain CPU buffers and runs the
same file with the same logits. That switch also turns off the ``CPU_REPACK`` buffer, which speeds Q4_0 /
Q4_K on AVX2 and AVX-512, so so8t turns extra buffers off **only on builds that report** ``AMX_INT8 = 1``
(:func:`extra_bufts_decision`); every other build loads exactly as llama.cpp's defaults say. Why a
load-time switch and not build flags: a build flag is undone silently by a wheel that pip cached before
(pip's wheel cache key ignores ``CMAKE_ARGS``), while the load-time switch follows the build that is
actually imported. ``SO8T_LLAMA_EXTRA_BUFTS=0|1`` overrides the decision (``auto``, the default, decides).
"""

from __future__ import annotations

import functools
import os
import signal
from dataclasses import dataclass

#: Environment variable overriding the extra-buffer decision: ``0`` (off), ``1`` (on), ``auto``.
EXTRA_BUFTS_ENV = "SO8T_LLAMA_EXTRA_BUFTS"
#: Features every x86-64 build of the last decade reports, left out of :func:`summary`'s line.
_ROUTINE = ("SSE3", "SSSE3", "AVX", "AVX_VNNI", "F16C", "FMA", "BMI2", "LLAMAFILE", "OPENMP", "AVX512_VBMI",
            "AVX512_VNNI", "AVX512_BF16")
#: Build features under which extra buffer types are turned off (Note [AMX]).
CRASHING_EXTRA_BUFTS = ("AMX_INT8",)


def features(system_info: str) -> dict[str, dict[str, str]]:
    """Parse ``llama_print_system_info()``: backend name -> {feature: value}, in the printed order."""
    out: dict[str, dict[str, str]] = {}
    backend = None
    for piece in system_info.split("|"):
        piece = piece.strip()
        if not piece:
            continue
        if " : " in piece:  # "CPU : SSE3 = 1" starts a backend
            backend, piece = (part.strip() for part in piece.split(" : ", 1))
            out.setdefault(backend, {})
        if backend is None or "=" not in piece:
            continue
        name, value = (part.strip() for part in piece.split("=", 1))
        out[backend][name] = value
    return out


def enabled(system_info: str) -> list[str]:
    """The features that are on (``X = 1``, or a value such as ``SVE_CNT = 16``), over all backends."""
    return [name for feats in features(system_info).values() for name, value in feats.items() if value != "0"]


@dataclass(frozen=True)
class ExtraBuftsDecision:
    """Whether a load may use llama.cpp's extra buffer types (AMX, CPU_REPACK, ...), and why."""

    allowed: bool
    reason: str


def extra_bufts_decision(system_info: str, override: str | None = None) -> ExtraBuftsDecision:
    """Note [AMX]: off when the build reports a feature of :data:`CRASHING_EXTRA_BUFTS`, on otherwise;
    ``override`` (the value of ``SO8T_LLAMA_EXTRA_BUFTS``) ``"0"`` / ``"1"`` forces it, ``None`` / ``"auto"``
    decides. Any other override is a ``ValueError`` naming the variable."""
    choice = (override or "auto").strip().lower()
    if choice in ("0", "off", "false"):
        return ExtraBuftsDecision(False, f"{EXTRA_BUFTS_ENV}={override}")
    if choice in ("1", "on", "true"):
        return ExtraBuftsDecision(True, f"{EXTRA_BUFTS_ENV}={override}")
    if choice != "auto":
        raise ValueError(f"{EXTRA_BUFTS_ENV}={override!r}: expected 0, 1 or auto")
    crashing = [name for name in CRASHING_EXTRA_BUFTS if name in enabled(system_info)]
    if crashing:
        return ExtraBuftsDecision(False, f"build has {', '.join(crashing)}: ggml's AMX buffer crashes "
                                  "(llama.cpp #20824), extra buffers off")
    return ExtraBuftsDecision(True, "llama.cpp's default (no AMX in this build)")


@functools.lru_cache(maxsize=1)
def system_info() -> str:
    """``llama_print_system_info()`` of the installed llama-cpp-python (loads llama.cpp)."""
    from so8t.llama import api as llama_api

    return llama_api.api().llama_print_system_info().decode("utf-8", "replace")


def current_decision() -> ExtraBuftsDecision:
    """:func:`extra_bufts_decision` for the installed build and this process's environment."""
    return extra_bufts_decision(system_info(), os.environ.get(EXTRA_BUFTS_ENV))


def summary(info: str) -> str:
    """One short line of the build: the CPU features that pick ggml's kernels, e.g.
    ``CPU: AVX2 AVX512 AVX512_VNNI REPACK``."""
    keep = [name for name in enabled(info) if name not in _ROUTINE]
    backends = ", ".join(features(info)) or "no backend reported"
    return f"{backends}: {' '.join(keep) or 'no SIMD features'}"


def crash_line(returncode: int, what: str, info: str, decision: ExtraBuftsDecision | None = None) -> str:
    """One terminal line for a llama.cpp child killed by a signal: the signal, the build's features and,
    for a known case, the fix (``returncode`` is ``subprocess``'s, negative for a signal)."""
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    line = f"llama.cpp died of {name} in {what}; {summary(info) if info else 'build unknown'}"
    feats = enabled(info)
    if any(f in feats for f in CRASHING_EXTRA_BUFTS) and (decision is None or decision.allowed):
        return line + f"; known AMX crash (llama.cpp #20824): set {EXTRA_BUFTS_ENV}=0"
    if decision is not None and decision.allowed:
        return line + f"; try {EXTRA_BUFTS_ENV}=0 (plain CPU buffers)"
    return line
