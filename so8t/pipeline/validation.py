"""The pipeline's validation step: one validator run per text GGUF, its report written next to the files.

All files of a run share one :class:`~so8t.validate.parity_reference.ParityReference`, so the streamed
float64 reference runs once per token-id set (not once per file) and the eps is chosen once."""

from __future__ import annotations

from pathlib import Path

from so8t.io import atomic_path
from so8t.validate.report import PARITY_CHECK


def validate_text_file(
    gguf: Path, so8t_dir: Path, sidecar: Path | None, mmproj: Path | None, report_path: Path, reference=None
) -> tuple[str, str | None]:
    """Validate ``gguf`` against ``so8t_dir`` (``reference``: the run's shared ParityReference); write the
    JSON report; return (overall, parity summary)."""
    from so8t.validate import SO8TGGUFValidator

    report = SO8TGGUFValidator(gguf, so8t_model=so8t_dir, sidecar=sidecar, mmproj=mmproj, reference=reference).run()
    with atomic_path(report_path) as tmp:
        tmp.write_text(report.to_json() + "\n")
    parity = next((c for c in report.checks if c.name == PARITY_CHECK), None)
    return report.overall, None if parity is None else parity_summary(parity)


def parity_summary(parity) -> str:
    """One table cell for a parity result: the figures of a PASS (both sides for block types), else why."""
    d = parity.details or {}
    if parity.status != "PASS" or "ours" not in d:
        return f"{parity.status}: {parity.reason}"
    ours = d["ours"]
    if "baseline" not in d:
        return f"max|dlogit| {ours['max_abs']:.2e} <= {parity.bound:.2e}, top-1 {ours['top1']:.3f}"
    base = d["baseline"]
    return (f"KL {ours['mean_kl']:.2e} vs llama.cpp's {base['mean_kl']:.2e} (ratio {d['kl_ratio']:.3f}), "
            f"top-1 {ours['top1']:.3f} vs {base['top1']:.3f}")
