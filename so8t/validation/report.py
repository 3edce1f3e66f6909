"""Validation report: one entry per check, a summary, the overall verdict, and its JSON form.

JSON schema (``report.schema.json`` next to this module, loaded as ``REPORT_SCHEMA``; JSON Schema draft
2020-12; ``schema_version`` 1; linked from docs/validation.md)::

    {
      "schema_version": 1,
      "tool": "so8t validate",
      "overall": "PASS" | "UNVERIFIED" | "FAIL" | "ERROR",
      "summary": {"PASS": int, "FAIL": int, "SKIP": int, "ERROR": int, "total": int},
      "files": {ROLE: {"path": str, "size_bytes": int | null}},   # ROLE: gguf_model, so8t_model,
                                                                  # sidecar, mmproj
      "tool_versions": {"so8t": str, "python": str, "gguf": str, "numpy": str,
                        "torch": str | null, "llama_cpp": str | null, ...},
      "created_utc": "2026-01-01T00:00:00Z",
      "duration_s": float,
      "checks": [
        {"name": "tensors.content_hash",            # dotted, unique; prefix = category
         "category": "metadata" | "tensors" | "group" | "runtime" | "parity" | "file",
         "status": "PASS" | "FAIL" | "SKIP" | "ERROR",
         "reason": str,                             # why (always set; for PASS a one-line summary)
         "measured": number | string | bool | null, # what was measured (an error, a hash, a count)
         "bound": number | string | bool | null,    # what it was compared against
         "details": object | null,                  # optional structured figures (parity: both sides'
                                                    # KL statistics, the ratio, the top-1 margin)
         "duration_s": float}
      ]
    }

Status meanings: ``PASS`` the property holds; ``FAIL`` the file violates it (the reason says how);
``SKIP`` the check did not apply or its prerequisite failed (the reason names which); ``ERROR`` the check
itself could not run (an environment problem or a validator bug, never the file's fault by design).

Overall: ``FAIL`` if any check failed, else ``ERROR`` if any check errored, else ``UNVERIFIED`` when
the logit parity check (``PARITY_CHECK``) did not pass (it was skipped: no ``--so8t-model``, or the
runtime stage did not run), else ``PASS``. Only ``PASS`` means the files are good *and* llama.cpp computes
what the SO8T model computes; ``UNVERIFIED`` means every check that ran passed but parity was not
checked. ``so8t validate`` exits 0 on PASS, 3 on UNVERIFIED, 1 on FAIL or ERROR.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("PASS", "FAIL", "SKIP", "ERROR")
OVERALL = ("PASS", "UNVERIFIED", "FAIL", "ERROR")
#: The check whose PASS turns an all-passing run from UNVERIFIED into PASS.
PARITY_CHECK = "parity.logits"
CATEGORIES = ("file", "metadata", "tensors", "group", "runtime", "parity")
FILE_ROLES = ("gguf_model", "so8t_model", "sidecar", "mmproj")

#: The report's JSON Schema (draft 2020-12), published as so8t/validation/report.schema.json: one home, read
#: here; tests validate reports against it with the ``jsonschema`` library (test extra).
SCHEMA_FILE = Path(__file__).with_name("report.schema.json")
REPORT_SCHEMA: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def _json_scalar(value: Any) -> Any:
    """Numbers, strings, booleans and None pass; NaN/Inf become strings (JSON has no NaN); others repr."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isfinite(number):
        return int(number) if isinstance(value, int) else number
    return str(number)


def _json_tree(value: Any) -> Any:
    """:func:`_json_scalar` applied through dicts and lists."""
    if isinstance(value, dict):
        return {str(k): _json_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_tree(v) for v in value]
    return _json_scalar(value)


@dataclass
class CheckResult:
    """The outcome of one check (see the module docstring for the meaning of each field)."""

    name: str
    category: str
    status: str
    reason: str
    measured: Any = None
    bound: Any = None
    duration_s: float = 0.0
    details: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.category not in CATEGORIES:
            raise ValueError(f"category must be one of {CATEGORIES}, got {self.category!r}")
        self.measured = _json_scalar(self.measured)
        self.bound = _json_scalar(self.bound)
        self.details = _json_tree(self.details)


@dataclass
class Report:
    """All check results of one validation run."""

    checks: list[CheckResult] = field(default_factory=list)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    tool_versions: dict[str, str | None] = field(default_factory=dict)
    created_utc: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    duration_s: float = 0.0

    @property
    def summary(self) -> dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for check in self.checks:
            counts[check.status] += 1
        counts["total"] = len(self.checks)
        return counts

    @property
    def overall(self) -> str:
        statuses = {check.status for check in self.checks}
        if "FAIL" in statuses:
            return "FAIL"
        if "ERROR" in statuses:
            return "ERROR"
        if not self.checks:
            return "ERROR"
        parity = next((c for c in self.checks if c.name == PARITY_CHECK), None)
        return "PASS" if parity is not None and parity.status == "PASS" else "UNVERIFIED"

    @property
    def passed(self) -> bool:
        return self.overall == "PASS"

    def get(self, name: str) -> CheckResult:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    @property
    def warnings(self) -> list[str]:
        """Information a check raised beside its verdict (``details["warning"]``), never a failure."""
        return [c.details["warning"] for c in self.checks if c.details and c.details.get("warning")]

    def by_status(self, status: str) -> list[CheckResult]:
        return [c for c in self.checks if c.status == status]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": "so8t validate",
            "overall": self.overall,
            "summary": self.summary,
            "files": self.files,
            "tool_versions": self.tool_versions,
            "created_utc": self.created_utc,
            "duration_s": round(float(self.duration_s), 4),
            "checks": [asdict(c) | {"duration_s": round(c.duration_s, 4)} for c in self.checks],
        }

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def table(self, verbose: bool = False) -> str:
        """Plain-text table of the checks (one line each; reasons cut unless ``verbose``)."""
        width = max((len(c.name) for c in self.checks), default=10)
        lines = [f"{'check':<{width}}  {'status':<6}  {'time':>7}  reason", "-" * (width + 40)]
        for c in self.checks:
            reason = c.reason if verbose or len(c.reason) <= 140 else c.reason[:137] + "..."
            lines.append(f"{c.name:<{width}}  {c.status:<6}  {c.duration_s:>6.2f}s  {reason}")
        s = self.summary
        lines.append("-" * (width + 40))
        lines.append(
            f"overall {self.overall}: {s['PASS']} passed, {s['FAIL']} failed, {s['SKIP']} skipped, "
            f"{s['ERROR']} errors ({self.duration_s:.1f} s)"
        )
        lines += [f"warning: {w}" for w in self.warnings]
        if self.overall == "UNVERIFIED":
            lines.append("UNVERIFIED: logit parity against PyTorch did not run; validate with --so8t-model DIR "
                         "(the SO8T checkpoint the file was exported from) to check it")
        return "\n".join(lines)
