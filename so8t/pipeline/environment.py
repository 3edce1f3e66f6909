"""Environment check for ``so8t pipeline``: library versions and free disk against the estimated need.

The disk estimate is deliberately generous: the SO8T checkpoint is a copy of the source weights, every text
GGUF is estimated from the parameter count and the bits per weight of its quant type (K-quants are encoded
in the export's single pass, with no intermediate file).
"""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from so8t.errors import So8tError

#: Distributions whose versions the pipeline reports (and requires to be importable).
REQUIRED = ("torch", "transformers", "safetensors", "gguf", "numpy", "llama_cpp_python")

#: Approximate bits per weight of each export type (K-quant mixes average their block formats).
BITS_PER_WEIGHT = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.5625,
    "Q5_K_M": 5.7,
    "Q5_K_S": 5.5,
    "Q4_K_M": 4.9,
    "Q4_K_S": 4.6,
    "Q4_0": 4.5,
}

#: Safety margin on the estimate (metadata, tokenizer, temporaries).
DISK_MARGIN = 1.2


@dataclass
class Environment:
    python: str
    versions: dict[str, str]
    free_bytes: int
    needed_bytes: int
    problems: list[str] = field(default_factory=list)
    llama_build: str = ""  # the CPU features llama.cpp was built with, and the extra-buffer decision


    @property
    def ok(self) -> bool:
        return not self.problems


def library_versions() -> tuple[dict[str, str], list[str]]:
    """Installed versions of :data:`REQUIRED`; the second item lists the missing ones."""
    versions, missing = {}, []
    for dist in REQUIRED:
        try:
            versions[dist] = importlib.metadata.version(dist.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    return versions, missing


def estimate_disk_need(source_bytes: int, n_params: int, quant_types: list[str]) -> int:
    """Bytes the pipeline writes: checkpoint copy + every text GGUF (the export writes no intermediate)."""
    total = source_bytes
    for quant in quant_types:
        total += n_params * BITS_PER_WEIGHT.get(quant.upper(), 32.0) / 8
    return int(total * DISK_MARGIN)


def check_environment(output_dir: Path, source_bytes: int, n_params: int, quant_types: list[str]) -> Environment:
    """Versions, free disk at ``output_dir`` (or its nearest existing parent) versus the estimate."""
    versions, missing = library_versions()
    probe = Path(output_dir).absolute()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = estimate_disk_need(source_bytes, n_params, quant_types)
    problems = [f"{dist} is not installed" for dist in missing]
    if free < need:
        problems.append(
            f"{probe}: {free / 1e9:.2f} GB free but the pipeline needs about {need / 1e9:.2f} GB"
        )
    return Environment(platform.python_version(), versions, free, need, problems,
                       llama_build="" if "llama_cpp_python" in missing else llama_build_line())


def llama_build_line() -> str:
    """The llama.cpp build's features and whether loads use extra buffer types (so8t/llama/build.py), so a
    user can tell which CPU path runs: ``CPU: AVX2 AVX512 REPACK; extra buffers on (...)``."""
    from so8t.llama import build as llama_build

    decision = llama_build.current_decision()
    return (f"{llama_build.summary(llama_build.system_info())}; extra buffers "
            f"{'on' if decision.allowed else 'off'} ({decision.reason})")


def require(env: Environment) -> None:
    """Raise one ``So8tError`` naming every problem the environment check found."""
    if not env.ok:
        raise So8tError("environment check failed: " + "; ".join(env.problems))
