"""Benchmark configuration (pytest-benchmark). Not part of the default gate: run ``pytest benchmarks``.

Options:
    --so8t-bench-full          use the full-size random replica of Qwen2-VL-2B-Instruct (about 4.4 GB,
                               built once into ``$SO8T_CACHE_DIR`` or ``~/.cache/so8t``) instead of the
                               embedded default model
    --so8t-bench-rounds N      timed rounds per benchmark (default: 3 embedded, 1 full size; the whole
                               pipeline runs once unless this is given)
    --so8t-bench-threads N     llama.cpp threads (default: every CPU this process may use)
    --so8t-bench-guard-steps N training steps of the guard-quality benchmark, batch 8 (default: 60, as
                               ``make demo-real``; 10 on the embedded model, whose random weights learn
                               nothing in any number of steps: its run only proves the plumbing)
    --so8t-model PATH          (root conftest) benchmark a user's checkpoint instead

Every benchmark id carries the model label (``embedded``, ``full`` or ``custom``) so runs on different
models never share a trend line in the dashboard. Only the operation runs under ``benchmark(...)``;
correctness is asserted outside the timed call; figures go to ``benchmark.extra_info`` (tokens/s, quant
type, peak RSS, file size, and ratios to a baseline timed in the same session). Machine facts go to the
saved JSON through ``pytest_benchmark_update_machine_info`` (key ``so8t``).

Peak RSS: the Linux high-water mark ``VmHWM`` of this process, reset before the operation through
``/proc/self/clear_refs`` (so it includes what the test process already holds: Python, torch, pytest);
child processes (llama.cpp's converter) are measured with ``os.wait4``'s ``ru_maxrss``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Package versions recorded with every run.
VERSIONED = (
    "so8t",
    "torch",
    "transformers",
    "llama_cpp_python",
    "gguf",
    "numpy",
    "safetensors",
    "pytest-benchmark",
)

#: Inference workload (docs/reference.md section 7 uses the same figures): prompt tokens, generated tokens.
N_PROMPT, N_GEN = 128, 32


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """The gate's ``-n 1`` (pyproject addopts: crash isolation in an xdist worker) is turned off here:
    pytest-benchmark refuses to time under xdist. Runs before xdist's own hook (a conftest registers after
    the installed plugins, and pluggy calls the later one first). pytest-benchmark also reads the worker
    variable xdist sets, which a run started from inside a gate worker inherits."""
    if getattr(config.option, "numprocesses", None):
        config.option.numprocesses = 0
        config.option.dist = "no"
    if not hasattr(config, "workerinput"):  # started from inside a gate worker (suites/test_nightly.py):
        os.environ.pop("PYTEST_XDIST_WORKER", None)  # that worker's variable is not ours


def pytest_addoption(parser):
    group = parser.getgroup("so8t benchmarks")
    group.addoption(
        "--so8t-bench-full",
        action="store_true",
        default=False,
        help="benchmark the full-size Qwen2-VL-2B replica (built once, cached) instead of the embedded model",
    )
    group.addoption("--so8t-bench-rounds", type=int, default=None, help="timed rounds per benchmark")
    group.addoption("--so8t-bench-threads", type=int, default=None, help="llama.cpp threads")
    group.addoption(
        "--so8t-bench-guard-steps", type=int, default=None, help="training steps of test_bench_guard_quality"
    )


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def model_label(config) -> str:
    if config.getoption("--so8t-model", default=None):
        return "custom"
    return "full" if config.getoption("--so8t-bench-full") else "embedded"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["so8t"] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "llama_threads": config.getoption("--so8t-bench-threads") or usable_cpus(),
        "mem_total_gb": _mem_total_gb(),
        "model": model_label(config),
        **{name.replace("-", "_"): _version(name) for name in VERSIONED},
    }


def pytest_generate_tests(metafunc):
    """Give every benchmark id the model label (see the module docstring)."""
    if "bench_model" in metafunc.fixturenames:
        label = model_label(metafunc.config)
        metafunc.parametrize("bench_model", [label], ids=[label], scope="session")


@dataclass(frozen=True)
class BenchConfig:
    model: str  # embedded | full | custom
    source: Path  # the Qwen2-VL checkpoint benchmarked
    rounds: int
    threads: int
    rounds_given: bool  # --so8t-bench-rounds was passed (the pipeline runs once otherwise)
    workdir: Path  # outputs (several GB at full size)
    guard_steps: int  # training steps of the guard-quality benchmark


@pytest.fixture(scope="session")
def source_checkpoint(request) -> Path:
    """The Qwen2-VL checkpoint benchmarked: ``--so8t-model``, the full-size replica, or the embedded model.
    Named as the suites' fixture that reads ``--so8t-model`` is named: the so8t pytest plugin skips a test
    whose fixtures never reach it on ``--so8t-model`` as a check of the tool itself, and every benchmark
    reads the checkpoint (through :func:`bench`)."""
    label = model_label(request.config)
    if label == "custom":
        return Path(request.config.getoption("--so8t-model"))
    if label == "full":
        return full_replica()
    from so8t.testing import default_checkpoint

    return default_checkpoint()


@pytest.fixture(scope="session")
def bench(request, tmp_path_factory, source_checkpoint) -> BenchConfig:
    config = request.config
    label = model_label(config)
    source = source_checkpoint
    given = config.getoption("--so8t-bench-rounds")
    rounds = given or (1 if label == "full" else 3)
    threads = config.getoption("--so8t-bench-threads") or usable_cpus()
    guard_steps = config.getoption("--so8t-bench-guard-steps")
    if guard_steps is None:
        guard_steps = 10 if label == "embedded" else 60
    return BenchConfig(
        label, source, rounds, threads, given is not None, tmp_path_factory.mktemp("bench"), guard_steps
    )


def full_replica() -> Path:
    """The full-size replica in the so8t cache, built on first use (about a minute, 4.4 GB)."""
    from so8t.testing import build_full_replica
    from so8t.testing.default import cache_dir

    path = cache_dir() / "qwen2-vl-2b-instruct-replica"
    if not (path / "config.json").is_file():
        build_full_replica(path)
    return path


class PeakRSS:
    """Peak resident memory of this process during a ``with`` block, in MB (``.mb``).

    Resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``) on entry and reads
    ``VmHWM`` on exit. Where the reset is impossible, falls back to ``ru_maxrss`` (process lifetime).
    """

    def __init__(self):
        self.mb = 0.0

    def __enter__(self):  # returns self
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        return self

    def __exit__(self, *exc) -> None:
        self.mb = max(self.mb, _vm_hwm_mb())


class TreeRSS:
    """Peak resident memory of this process and all its descendants *together* (llama.cpp children
    included), in MB, sampled every ``interval`` seconds with psutil on a background thread during a
    ``with`` block: ``.mb`` overall, ``.by_label[label]`` while the caller's ``.label`` was ``label``.

    A sum over processes: pages two processes share count twice (none of ours share a file map at the
    same time). Sampling can miss a spike shorter than ``interval``; ``/usr/bin/time``'s figure is
    different again, the largest single process. Both are recorded by the pipeline benchmark.
    """

    def __init__(self, interval: float = 0.1):
        import threading

        self.interval, self.mb, self._label = interval, 0.0, None
        self.by_label: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)

    def _sample(self) -> float:
        import psutil

        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # it exited between the listing and the read
                pass
        return total / 2**20

    @property
    def label(self) -> str | None:
        return self._label

    @label.setter
    def label(self, value: str | None) -> None:
        """A new label takes one sample at once, so a step shorter than ``interval`` has a figure too."""
        self._label = value
        self._record(value)

    def _record(self, label: str | None) -> None:
        mb = self._sample()
        self.mb = max(self.mb, mb)
        if label is not None:
            self.by_label[label] = max(self.by_label.get(label, 0.0), mb)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._record(self._label)
            self._stop.wait(self.interval)

    def __enter__(self):  # returns self
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _vm_hwm_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, float, str]:
    """Run a command; (wall seconds, peak RSS MB of that child, combined output). Fails on non-zero exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0:
        raise AssertionError(f"{cmd[:3]} exited {proc.returncode}:\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, output


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def llama_quantize_alone(src: Path, dst: Path, quant: str, threads: int) -> None:
    """llama.cpp's quantizer called directly (the K-quant baseline): ``src`` GGUF -> ``dst`` of ``quant``."""
    from gguf import LlamaFileType

    from so8t.llama import api as llama_api

    rc, _ = llama_api.quantize_file(src, dst, int(LlamaFileType[f"MOSTLY_{quant}"]), threads, capture_log=False)
    assert rc == 0, f"llama_model_quantize {src} -> {quant} returned {rc}"


@pytest.fixture(scope="session")
def tools():
    """Helpers shared by the benchmark modules (a fixture, so test modules need not import conftest)."""
    return _Tools()


class _Tools:
    PeakRSS = PeakRSS
    TreeRSS = TreeRSS
    run_child = staticmethod(run_child)
    median = staticmethod(median)
    llama_quantize_alone = staticmethod(llama_quantize_alone)

    @staticmethod
    def fresh(path: Path) -> Path:
        """Remove ``path`` (file or directory) so a round starts from nothing; return it."""
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        return path

    @staticmethod
    def dir_size(path: Path) -> int:
        return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())

    @staticmethod
    def converter_script() -> Path | None:
        """llama.cpp's ``convert_hf_to_gguf.py`` from ``LLAMA_CPP_CONVERTER`` (None when unset)."""
        value = os.environ.get("LLAMA_CPP_CONVERTER")
        if not value:
            return None
        path = Path(value)
        if not path.is_file():
            pytest.fail(f"LLAMA_CPP_CONVERTER={value} is not a file")
        return path


#: Seed of the random-gate conversion benchmarked by export and inference (any fixed value).
GATE_SEED = 20261128


@pytest.fixture(scope="session")
def so8t_random(bench) -> Path:
    """The benchmarked checkpoint converted with seeded random gates (so the fold really rotates)."""
    from so8t.conversion import Qwen2VLToSO8TConverter

    out = bench.workdir / "so8t-random"
    return Qwen2VLToSO8TConverter(
        bench.source, progress=False, rotation_init="random", seed=GATE_SEED
    ).convert(out)


@pytest.fixture()
def scratch(bench) -> Path:
    """A fresh directory for one test's outputs, removed afterwards (full-size outputs take many GB)."""
    path = bench.workdir / f"scratch-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)
