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
    """A short table cell for a parity result (the explanation goes under the table, :func:`file_notes`):
    the float bound, or for block types the ratio to llama.cpp's quantization of the same weights and
    what the type costs against the plain source model."""
    d = parity.details or {}
    if parity.status != "PASS" or "ours" not in d:
        return parity.status
    ours = d["ours"]
    if "baseline" not in d:
        return f"max|dlogit| {ours['max_abs']:.1e} <= {parity.bound:.1e}"
    cost = d.get("quantization_cost") or {}
    return f"KL ratio {d['kl_ratio']:.2f}" + (f", cost {cost['ratio']:.3g}x src" if "ratio" in cost else "")


def file_notes(report) -> list[str]:
    """What a file's row cannot hold: why each check that did not pass failed (the run's warnings are
    summed up once, under the table)."""
    return [f"{c.name} {c.status}: {c.reason}" for c in report.checks if c.status in ("FAIL", "ERROR")]


def cheapest_close_type(rows, threshold: float) -> str | None:
    """The smallest validated text file whose quantization cost stays within ``threshold`` times the plain
    source model's (rows: ``FileRow`` with ``cost_ratio``), as ``"Q8_0 (1.07x)"``; None if there is none."""
    close = [r for r in rows if r.kind == "text" and r.validation == "PASS" and r.cost_ratio is not None
             and r.cost_ratio <= threshold]
    best = min(close, key=lambda r: r.size, default=None)
    return None if best is None else f"{best.quant} ({best.cost_ratio:.3g}x)"
