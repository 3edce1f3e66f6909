"""What the checks share: the files under validation, opened once, and the check machinery.

A check is a function ``check(ctx) -> Outcome`` registered with :func:`check` under a dotted name and a
category. It returns :func:`passed` / :func:`skipped`, or signals a violation by raising
:class:`CheckFailed` (or returning :func:`failed`). Any other exception becomes ``ERROR``: the check
could not run. Prerequisites (``requires``) are names of earlier checks, or ``"category:NAME"`` for
"every earlier check of that category"; a check whose prerequisite did not pass is ``SKIP``ped with the
reason, so one corrupt file gives one FAIL at its root, never a cascade of tracebacks.

Files are opened lazily and defensively: ``ctx.reader`` is set by the ``file.*`` checks only when
gguf-py could parse the text GGUF; every later check may rely on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from so8t.validation.report import CheckResult


class CheckFailed(Exception):
    """Raised inside a check: the file violates the property. ``measured``/``bound`` go to the report."""

    def __init__(self, reason: str, measured: Any = None, bound: Any = None):
        super().__init__(reason)
        self.reason, self.measured, self.bound = reason, measured, bound


@dataclass
class Outcome:
    status: str
    reason: str
    measured: Any = None
    bound: Any = None


def passed(reason: str, measured: Any = None, bound: Any = None) -> Outcome:
    return Outcome("PASS", reason, measured, bound)


def failed(reason: str, measured: Any = None, bound: Any = None) -> Outcome:
    return Outcome("FAIL", reason, measured, bound)


def skipped(reason: str) -> Outcome:
    return Outcome("SKIP", reason)


def expect(condition: bool, reason: str, measured: Any = None, bound: Any = None) -> None:
    """Raise :class:`CheckFailed` with ``reason`` unless ``condition``."""
    if not condition:
        raise CheckFailed(reason, measured, bound)


@dataclass(frozen=True)
class Check:
    name: str
    category: str
    func: Callable[[Context], Outcome]
    requires: tuple[str, ...] = ()


def check(name: str, category: str, requires: tuple[str, ...] = ()):
    """Decorator: turn ``func(ctx) -> Outcome`` into a :class:`Check`."""

    def wrap(func: Callable[[Context], Outcome]) -> Check:
        return Check(name, category, func, tuple(requires))

    return wrap


@dataclass
class Context:
    """The files of one validation run and what earlier checks learned about them."""

    gguf_path: Path
    so8t_model: Path | None = None
    sidecar_path: Path | None = None
    mmproj_path: Path | None = None
    run_runtime: bool = True
    reader: Any = None  # gguf.GGUFReader of the text file, once file.readable passed
    sidecar: Any = None  # so8t.gguf.sidecar_reader.Sidecar, once file.sidecar_readable passed
    mmproj_reader: Any = None
    reference: Any = None  # so8t.validation.parity_reference.ParityReference, shared across a run's files
    image_checked_with: Path | None = None  # a sibling text file this run answered an image prompt with
    image_text_file: Path | None = None  # the text file to ask the image prompt with (default: gguf_path)
    details: dict[str, Any] | None = None  # structured figures of the running check, for its report entry
    cache: dict[str, Any] = field(default_factory=dict)
    results: list[CheckResult] = field(default_factory=list)

    # -- metadata access (text file) --------------------------------------------------------------
    def field(self, key: str):
        return self.reader.fields.get(key) if self.reader is not None else None

    def value(self, key: str, default: Any = None) -> Any:
        """Python value of a metadata key (list for arrays); ``default`` if absent or undecodable."""
        fld = self.field(key)
        if fld is None:
            return default
        try:
            return fld.contents()
        except (UnicodeDecodeError, ValueError, IndexError, TypeError):
            return default

    def result_of(self, name: str) -> CheckResult | None:
        return next((r for r in self.results if r.name == name), None)

    def blocking(self, requirement: str) -> str | None:
        """Why ``requirement`` is not met (None when it is)."""
        if requirement.startswith("category:"):
            category = requirement.split(":", 1)[1]
            bad = [r.name for r in self.results if r.category == category and r.status in ("FAIL", "ERROR")]
            return f"{category} checks failed ({', '.join(bad[:3])})" if bad else None
        result = self.result_of(requirement)
        if result is None:
            return f"needs {requirement}, which did not run"
        if result.status == "PASS":
            return None
        if result.status == "SKIP":
            return f"{requirement} skipped ({result.reason})" if "skipped (" not in result.reason else result.reason
        return f"needs {requirement}, which is {result.status}"


def run_check(ctx: Context, chk: Check) -> CheckResult:
    """Run one check with its prerequisites, timing it; never raises (except KeyboardInterrupt)."""
    start = time.perf_counter()
    blockers = [b for b in (ctx.blocking(r) for r in chk.requires) if b]
    ctx.details = None
    if blockers:
        outcome = skipped("; ".join(blockers))
    else:
        try:
            outcome = chk.func(ctx)
        except CheckFailed as fail:
            outcome = failed(fail.reason, fail.measured, fail.bound)
        except MemoryError:
            outcome = failed("ran out of memory reading the file (sizes in the file are implausible)")
        except Exception as err:  # noqa: BLE001 - the check itself broke: report it, never propagate
            outcome = Outcome("ERROR", f"check raised {type(err).__name__}: {err}")
    result = CheckResult(
        name=chk.name,
        category=chk.category,
        status=outcome.status,
        reason=outcome.reason,
        measured=outcome.measured,
        bound=outcome.bound,
        duration_s=time.perf_counter() - start,
        details=ctx.details,
    )
    ctx.results.append(result)
    return result
