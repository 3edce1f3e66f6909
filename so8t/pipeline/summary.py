"""The final summary table of ``so8t pipeline``."""

from __future__ import annotations

import textwrap
from pathlib import Path

from so8t.tables import format_table, human_bytes

#: Columns the summary fits in (a terminal); the per-file explanations go under the table, wrapped.
WIDTH = 110


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_summary(result) -> str:
    """Steps with their times, then one row per file: size, export time, validation and parity."""
    steps = format_table(("step", "seconds", "detail"), [(s.name, f"{s.seconds:.1f}", s.detail) for s in result.steps])
    rows = [
        (
            f.kind,
            f.quant,
            Path(f.path).name,
            human_bytes(f.size),
            _num(f.seconds, ".1f"),
            f.validation or "-",
            f.parity or "-",
        )
        for f in result.files
    ]
    files = format_table(
        ("file", "type", "name", "size", "export s", "verdict", "parity vs PyTorch"), rows
    )
    notes = [f"{Path(f.path).name}: {note}" for f in result.files for note in getattr(f, "notes", [])]
    notes += [f"warning: {w}" for w in getattr(result, "warnings", [])]
    if notes:
        wrapped = [textwrap.fill(n, WIDTH, initial_indent="  ", subsequent_indent="    ") for n in notes]
        files += "\n\n" + "\n".join(["notes:", *wrapped])
    training = ""
    if getattr(result, "training", None):
        from so8t.training.metrics import format_metrics

        training = "\n\ntrained safety head, eval metrics:\n" + format_metrics(result.training)
    if not result.ok:
        verdict = "PIPELINE FAILED VALIDATION (see reports/)"
    elif not result.validated:
        verdict = ("PIPELINE DONE, NOT VALIDATED (--no-validate): parity against PyTorch did not run; "
                   "check each file with 'so8t validate --gguf-model F --so8t-model SO8T_DIR'")
    else:
        verdict = "PIPELINE OK"
    build = (result.environment or {}).get("llama_build")
    build = f"\nllama.cpp build: {build}" if build else ""
    return f"{steps}{build}\n\n{files}{training}\n\noutput: {result.output_dir}\n{verdict}"
