"""Validate exported SO8T GGUF files: ``SO8TGGUFValidator(gguf, so8t_model=..., sidecar=..., mmproj=...)
.run() -> Report`` (see :mod:`so8t.validation.validator` for the checks, :mod:`so8t.validation.report` for the
JSON schema).

The names below are imported on first use (PEP 562), so a module of this package can run on its own
without the validator's imports: the llama.cpp probe child (``python -m so8t.validation.checks_runtime``)
starts without torch, about 2 s sooner, and a validation starts several such children.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "REPORT_SCHEMA": "so8t.validation.report",
    "CheckResult": "so8t.validation.report",
    "Report": "so8t.validation.report",
    "CHECKS": "so8t.validation.validator",
    "SO8TGGUFValidator": "so8t.validation.validator",
    "checks_for": "so8t.validation.validator",
}
__all__ = ["CHECKS", "REPORT_SCHEMA", "CheckResult", "Report", "SO8TGGUFValidator", "checks_for"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
