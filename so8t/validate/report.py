"""Validation report: one entry per check, a summary, the overall verdict, and its JSON form.

JSON schema (``REPORT_SCHEMA`` below, JSON Schema draft 2020-12; ``schema_version`` 1)::

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
from typing import Any

SCHEMA_VERSION = 1
STATUSES = ("PASS", "FAIL", "SKIP", "ERROR")
OVERALL = ("PASS", "UNVERIFIED", "FAIL", "ERROR")
#: The check whose PASS turns an all-passing run from UNVERIFIED into PASS.
PARITY_CHECK = "parity.logits"
CATEGORIES = ("file", "metadata", "tensors", "group", "runtime", "parity")
FILE_ROLES = ("gguf_model", "so8t_model", "sidecar", "mmproj")

_SCALAR = {"type": ["number", "string", "boolean", "null"]}
REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "so8t validation report",
    "type": "object",
    "required": ["schema_version", "tool", "overall", "summary", "files", "tool_versions", "created_utc",
                 "duration_s", "checks"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "tool": {"type": "string"},
        "overall": {"enum": list(OVERALL)},
        "summary": {
            "type": "object",
            "required": [*STATUSES, "total"],
            "properties": {k: {"type": "integer", "minimum": 0} for k in (*STATUSES, "total")},
        },
        "files": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["path", "size_bytes"],
                "properties": {"path": {"type": "string"}, "size_bytes": {"type": ["integer", "null"]}},
            },
        },
        "tool_versions": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        "created_utc": {"type": "string"},
        "duration_s": {"type": "number", "minimum": 0},
        "checks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "category", "status", "reason", "measured", "bound", "duration_s"],
                "properties": {
                    "name": {"type": "string"},
                    "category": {"enum": list(CATEGORIES)},
                    "status": {"enum": list(STATUSES)},
                    "reason": {"type": "string"},
                    "measured": _SCALAR,
                    "bound": _SCALAR,
                    "details": {"type": ["object", "null"]},
                    "duration_s": {"type": "number", "minimum": 0},
                },
            },
        },
    },
}


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
        if self.overall == "UNVERIFIED":
            lines.append("UNVERIFIED: logit parity against PyTorch did not run; validate with --so8t-model DIR "
                         "(the SO8T checkpoint the file was exported from) to check it")
        return "\n".join(lines)


def schema_errors(data: Any, schema: dict[str, Any] = REPORT_SCHEMA, where: str = "$") -> list[str]:
    """Check ``data`` against the subset of JSON Schema that ``REPORT_SCHEMA`` uses (type, const, enum,
    required, properties, additionalProperties, items, minimum); returns the violations (empty = valid).
    Lets readers of a report check it without a jsonschema dependency."""
    errors: list[str] = []
    names = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}

    def type_ok(value: Any, kind: str) -> bool:
        if kind == "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        if kind == "number":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        return isinstance(value, names[kind])

    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(type_ok(data, k) for k in kinds):
            return [f"{where}: expected {'/'.join(kinds)}, got {type(data).__name__}"]
    if "const" in schema and data != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}, got {data!r}")
    if "enum" in schema and data not in schema["enum"]:
        errors.append(f"{where}: {data!r} not one of {schema['enum']}")
    if "minimum" in schema and isinstance(data, (int, float)) and data < schema["minimum"]:
        errors.append(f"{where}: {data} < {schema['minimum']}")
    if isinstance(data, dict):
        for key in schema.get("required", []):
            if key not in data:
                errors.append(f"{where}: missing {key!r}")
        for key, value in data.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                errors += schema_errors(value, sub, f"{where}.{key}")
    if isinstance(data, list) and "items" in schema:
        for i, item in enumerate(data):
            errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    return errors
