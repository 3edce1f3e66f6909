"""Validate exported SO8T GGUF files: ``SO8TGGUFValidator(gguf, so8t_model=..., sidecar=..., mmproj=...)
.run() -> Report`` (see :mod:`so8t.validate.validator` for the checks, :mod:`so8t.validate.report` for the
JSON schema)."""

from so8t.validate.report import REPORT_SCHEMA, CheckResult, Report
from so8t.validate.validator import CHECKS, SO8TGGUFValidator

__all__ = ["CHECKS", "REPORT_SCHEMA", "CheckResult", "Report", "SO8TGGUFValidator"]
