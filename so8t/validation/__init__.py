"""Validate exported SO8T GGUF files: ``SO8TGGUFValidator(gguf, so8t_model=..., sidecar=..., mmproj=...)
.run() -> Report`` (see :mod:`so8t.validation.validator` for the checks, :mod:`so8t.validation.report` for the
JSON schema)."""

from so8t.validation.report import REPORT_SCHEMA, CheckResult, Report
from so8t.validation.validator import CHECKS, SO8TGGUFValidator

__all__ = ["CHECKS", "REPORT_SCHEMA", "CheckResult", "Report", "SO8TGGUFValidator"]
