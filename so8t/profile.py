"""Where an export's time goes: seconds per phase, summed over the threads that ran it.

The phases are ``read`` (source bytes into memory), ``fold`` (gates into the weights, float64), ``cast``
(source dtype -> float32/float64 and the rounding to F16/BF16/F32), ``quantize`` (ggml's block kernels),
``write`` (encoded bytes into the output files) and ``hash`` (sha256 of each tensor's bytes, for the content
hash). Each is timed on the thread that runs it, both in CPU seconds (``time.thread_time``: what the
phase takes from the cores) and wall seconds (also the time it waits, e.g. on the disk).

Threads overlap, so the phases' wall seconds add up to more than the export's. The CPU seconds bound it
from below: on ``n`` cores an export takes at least ``sum(cpu) / n``, and at least the CPU seconds of any
phase that runs on one thread (``read``, ``fold``, ``write`` and ``hash`` do; ``quantize`` runs on a pool).

Collection is process-wide: ``with collect() as phases`` turns it on for every thread until the block
ends (an export does so on each run; a phase costs two clock reads, and phases are per chunk, not per
element). Two collections open at once each see every phase of both.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

#: The phases an export reports, in pipeline order.
PHASES = ("read", "fold", "cast", "quantize", "write", "hash")

_lock = threading.Lock()
_open: list[Phases] = []


@dataclass
class Phase:
    cpu_s: float = 0.0
    wall_s: float = 0.0
    calls: int = 0


@dataclass
class Phases:
    """The figures of one collection: per phase, and the whole block's wall and process CPU seconds."""

    phases: dict[str, Phase] = field(default_factory=lambda: {name: Phase() for name in PHASES})
    wall_s: float = 0.0
    cpu_s: float = 0.0

    def add(self, name: str, cpu_s: float, wall_s: float) -> None:
        entry = self.phases.setdefault(name, Phase())
        entry.cpu_s += cpu_s
        entry.wall_s += wall_s
        entry.calls += 1

    def as_dict(self) -> dict[str, float]:
        """Flat figures for a report or a benchmark's ``extra_info``: ``<phase>_cpu_s``, ``<phase>_wall_s``,
        ``total_wall_s``, ``total_cpu_s`` and ``other_cpu_s`` (process CPU in no phase: Python glue, GIL
        hand-overs, torch's own threads)."""
        out: dict[str, float] = {}
        for name, p in self.phases.items():
            out[f"{name}_cpu_s"] = round(p.cpu_s, 3)
            out[f"{name}_wall_s"] = round(p.wall_s, 3)
        out["total_wall_s"] = round(self.wall_s, 3)
        out["total_cpu_s"] = round(self.cpu_s, 3)
        out["other_cpu_s"] = round(self.cpu_s - sum(p.cpu_s for p in self.phases.values()), 3)
        return out

    def summary(self) -> str:
        lines = [f"{'phase':9s} {'cpu s':>8s} {'wall s':>8s} {'calls':>7s}"]
        for name, p in self.phases.items():
            lines.append(f"{name:9s} {p.cpu_s:8.2f} {p.wall_s:8.2f} {p.calls:7d}")
        other = self.cpu_s - sum(p.cpu_s for p in self.phases.values())
        lines.append(f"{'other':9s} {other:8.2f}")
        lines.append(f"{'total':9s} {self.cpu_s:8.2f} {self.wall_s:8.2f}  (process CPU, wall)")
        return "\n".join(lines)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as phase ``name`` on this thread, for every open collection (none: no cost but
    one list check)."""
    if not _open:
        yield
        return
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        yield
    finally:
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        with _lock:
            for phases in _open:
                phases.add(name, cpu, wall)


@contextlib.contextmanager
def collect() -> Iterator[Phases]:
    """Collect every phase run on any thread inside the block; the figures are complete when it ends."""
    phases = Phases()
    cpu, wall = time.process_time(), time.perf_counter()
    with _lock:
        _open.append(phases)
    try:
        yield phases
    finally:
        with _lock:
            _open.remove(phases)
        phases.cpu_s = time.process_time() - cpu
        phases.wall_s = time.perf_counter() - wall
