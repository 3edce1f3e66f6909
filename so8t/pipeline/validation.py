"""The pipeline's validation step: one validator run per text GGUF, its report written next to the files."""

from __future__ import annotations

from pathlib import Path

from so8t.io import atomic_path

PARITY_CHECK = "parity.logits"


def validate_text_file(
    gguf: Path, so8t_dir: Path, sidecar: Path | None, mmproj: Path | None, report_path: Path
) -> tuple[str, str | None]:
    """Validate ``gguf`` against ``so8t_dir``; write the JSON report; return (overall, parity summary)."""
    from so8t.validate import SO8TGGUFValidator

    report = SO8TGGUFValidator(gguf, so8t_model=so8t_dir, sidecar=sidecar, mmproj=mmproj).run()
    with atomic_path(report_path) as tmp:
        tmp.write_text(report.to_json() + "\n")
    parity = next((c for c in report.checks if c.name == PARITY_CHECK), None)
    summary = None
    if parity is not None:
        summary = parity.reason.split(": ", 1)[-1] if parity.status == "PASS" else f"{parity.status}: {parity.reason}"
    return report.overall, summary
