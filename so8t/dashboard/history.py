"""Read the pytest-benchmark JSON history of one machine.

``pytest --benchmark-autosave`` writes one file per run under ``.benchmarks/<machine-id>/``, named
``NNNN_<commit>_<date>[_uncommitted-changes].json``. Each file holds ``machine_info``, ``commit_info``,
``datetime`` (ISO 8601, UTC) and ``benchmarks[]`` with ``stats`` (seconds: ``median``, ``q1``, ``q3``, ...)
and ``extra_info`` (our benchmarks put tokens/s, quant type, peak RSS, file size and in-run baseline
ratios there).

A history compares runs of ONE machine only (timings from different machines mean nothing side by side):
``load_history`` picks the machine directory, validates every file, and orders runs oldest first by their
recorded date, then by the run number in the file name. Any malformed file is a ``So8tError`` naming that
file, in one line.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from so8t.errors import So8tError

#: Statistics every benchmark entry must carry (seconds); the trend draws median with the q1..q3 band.
REQUIRED_STATS = ("median", "q1", "q3")
#: Statistics kept when present.
OPTIONAL_STATS = ("mean", "min", "max", "stddev", "iqr", "ops")

_RUN_NUMBER = re.compile(r"^(\d+)_")


@dataclass(frozen=True)
class Measurement:
    """One benchmark of one run. Times in seconds; ``extra`` is the benchmark's ``extra_info``."""

    fullname: str
    name: str
    group: str | None
    median: float
    q1: float
    q3: float
    rounds: int
    stats: dict[str, float]
    extra: dict


@dataclass(frozen=True)
class Run:
    """One saved pytest-benchmark session."""

    path: Path
    number: int | None
    commit: str
    dirty: bool
    branch: str
    when: datetime
    machine_info: dict
    measurements: dict[str, Measurement]
    raw: dict = field(repr=False)

    @property
    def short_commit(self) -> str:
        text = self.commit[:8]
        return text + "+" if self.dirty else text

    @property
    def date_label(self) -> str:
        return self.when.strftime("%Y-%m-%d %H:%M")

    @property
    def label(self) -> str:
        number = f"#{self.number:04d} " if self.number is not None else ""
        return f"{number}{self.short_commit} {self.date_label}"


@dataclass(frozen=True)
class History:
    """All runs of one machine, oldest first."""

    machine: str
    directory: Path
    runs: list[Run]

    @property
    def latest(self) -> Run:
        return self.runs[-1]

    def benchmark_names(self) -> list[str]:
        """Full names of every benchmark seen, in order of first appearance."""
        seen: dict[str, None] = {}
        for run in self.runs:
            for name in run.measurements:
                seen.setdefault(name, None)
        return list(seen)

    def latest_of(self, fullname: str) -> tuple[Run, Measurement]:
        """The most recent run that measured ``fullname``, with its measurement."""
        return self.series(fullname)[-1]

    def series(self, fullname: str) -> list[tuple[Run, Measurement]]:
        """The runs that measured ``fullname``, oldest first, with their measurement."""
        return [(run, run.measurements[fullname]) for run in self.runs if fullname in run.measurements]


def machine_dirs(root: Path) -> list[Path]:
    """Sub-directories of a ``.benchmarks`` root that hold at least one JSON run."""
    return sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*.json")))


def load_history(path: str | Path, machine: str | None = None) -> History:
    """Load the runs of one machine.

    ``path`` is a ``.benchmarks`` directory (then ``machine`` names the sub-directory; it may be left out
    when there is only one) or one machine's directory itself.
    """
    root = Path(path)
    if not root.is_dir():
        raise So8tError(
            "benchmark history directory does not exist",
            path=root,
            hint="run 'pytest benchmarks --benchmark-autosave' first",
        )
    if machine is not None:
        directory = root / machine
        if not directory.is_dir():
            known = ", ".join(p.name for p in machine_dirs(root)) or "none"
            raise So8tError(f"no history for machine {machine!r} (machines here: {known})", path=root)
    elif any(root.glob("*.json")):
        directory = root
    else:
        dirs = machine_dirs(root)
        if not dirs:
            raise So8tError(
                "no pytest-benchmark JSON files found",
                path=root,
                hint="run 'pytest benchmarks --benchmark-autosave' first",
            )
        if len(dirs) > 1:
            names = ", ".join(p.name for p in dirs)
            raise So8tError(
                f"history of several machines ({names})", path=root, hint="pick one with --machine"
            )
        directory = dirs[0]
    files = sorted(directory.glob("*.json"))
    if not files:
        raise So8tError("no pytest-benchmark JSON files found", path=directory)
    runs = [parse_run(file) for file in files]
    runs.sort(key=lambda run: (run.when, run.number if run.number is not None else -1, run.path.name))
    return History(machine=directory.name, directory=directory, runs=runs)


def parse_run(path: Path) -> Run:
    """Parse and validate one pytest-benchmark JSON file; ``So8tError`` naming the file otherwise."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise So8tError("malformed benchmark history file: not UTF-8 text", path=path) from None
    except json.JSONDecodeError as err:
        raise So8tError(f"malformed benchmark history file: invalid JSON ({err})", path=path) from None
    except OSError as err:
        raise So8tError(f"cannot read benchmark history file: {err.strerror or err}", path=path) from None
    try:
        return _run_from_dict(path, raw)
    except _Malformed as err:
        raise So8tError(f"malformed benchmark history file: {err}", path=path) from None


class _Malformed(Exception):
    pass


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise _Malformed(message)


def _number(value, where: str) -> float:
    _require(
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        f"{where} is not a finite number",
    )
    return float(value)


def _run_from_dict(path: Path, raw) -> Run:
    _require(isinstance(raw, dict), "top level is not a JSON object")
    _require(isinstance(raw.get("benchmarks"), list), "no 'benchmarks' list")
    stamp = raw.get("datetime")
    _require(isinstance(stamp, str), "no 'datetime' string")
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        raise _Malformed(f"'datetime' {stamp!r} is not ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    commit_info = raw.get("commit_info") or {}
    _require(isinstance(commit_info, dict), "'commit_info' is not an object")
    machine_info = raw.get("machine_info") or {}
    _require(isinstance(machine_info, dict), "'machine_info' is not an object")
    measurements: dict[str, Measurement] = {}
    for index, entry in enumerate(raw["benchmarks"]):
        measurement = _measurement(entry, f"benchmarks[{index}]")
        _require(
            measurement.fullname not in measurements, f"benchmark {measurement.fullname!r} appears twice"
        )
        measurements[measurement.fullname] = measurement
    match = _RUN_NUMBER.match(path.name)
    return Run(
        path=path,
        number=int(match.group(1)) if match else None,
        commit=str(commit_info.get("id") or "unknown"),
        dirty=bool(commit_info.get("dirty", False)),
        branch=str(commit_info.get("branch") or ""),
        when=when,
        machine_info=machine_info,
        measurements=measurements,
        raw=raw,
    )


def _measurement(entry, where: str) -> Measurement:
    _require(isinstance(entry, dict), f"{where} is not an object")
    name = entry.get("name")
    _require(isinstance(name, str) and bool(name), f"{where} has no 'name'")
    fullname = entry.get("fullname") or name
    _require(isinstance(fullname, str), f"{where}.fullname is not a string")
    stats = entry.get("stats")
    _require(isinstance(stats, dict), f"{where} ({name}) has no 'stats' object")
    values = {key: _number(stats.get(key), f"{where}.stats.{key}") for key in REQUIRED_STATS}
    for key in OPTIONAL_STATS:
        if stats.get(key) is not None:
            values[key] = _number(stats[key], f"{where}.stats.{key}")
    extra = entry.get("extra_info") or {}
    _require(isinstance(extra, dict), f"{where}.extra_info is not an object")
    group = entry.get("group")
    rounds = stats.get("rounds", 0)
    return Measurement(
        fullname=fullname,
        name=name,
        group=str(group) if group is not None else None,
        median=values["median"],
        q1=values["q1"],
        q3=values["q3"],
        rounds=int(rounds) if isinstance(rounds, (int, float)) else 0,
        stats=values,
        extra=extra,
    )
