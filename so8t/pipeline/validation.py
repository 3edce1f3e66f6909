"""The pipeline's validation step: one validator run per text GGUF, its report written next to the files.

All files of a run share one :class:`~so8t.validation.parity_reference.ParityReference`, so the streamed
float64 reference runs once per token-id set (not once per file) and the eps is chosen once; the mmproj
answers an image prompt once per run, with the smallest text file (the least memory; the later reports
name that file)."""

from __future__ import annotations

from pathlib import Path

from so8t.io import atomic_path


def validate_text_file(
    gguf: Path, so8t_dir: Path, sidecar: Path | None, mmproj: Path | None, report_path: Path, reference=None,
    image_checked_with: Path | None = None, image_text_file: Path | None = None,
):
    """Validate ``gguf`` against ``so8t_dir`` (``reference``: the run's shared ParityReference;
    ``image_checked_with``: the text file this run already answered an image prompt with, with this
    ``mmproj``; ``image_text_file``: the one to ask it with); write the JSON report; return it."""
    from so8t.validation import SO8TGGUFValidator

    report = SO8TGGUFValidator(gguf, so8t_model=so8t_dir, sidecar=sidecar, mmproj=mmproj, reference=reference,
                               image_checked_with=image_checked_with, image_text_file=image_text_file).run()
    with atomic_path(report_path) as tmp:
        tmp.write_text(report.to_json() + "\n")
    return report


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
