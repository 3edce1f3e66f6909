"""Write the bundle (Modelfile, README.md, SHA256SUMS) of an export directory; see ``so8t.bundle``.

The three files are renamed into place together (``so8t.io.atomic_path``), or, inside ``so8t export``,
with the GGUF files (``stage``). SHA256SUMS lists every file of the table and the Modelfile and README.md.

Which text file the Modelfile and the commands use (``primary_type``): the smallest type whose report says
PASS, else (not validated) the first type exported.

A ``Modelfile`` or ``README.md`` already in the directory is replaced only when so8t wrote it (its first
line holds ``MARK``), and a ``SHA256SUMS`` only when every line has the sums format: an export into a
directory with the user's own README stops before any work (``check_replaceable``).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from so8t.errors import ExportError, So8tError
from so8t.io import atomic_path

MARK = "written by so8t (so8t.bundle)"
MODELFILE, CARD, SUMS = "Modelfile", "README.md", "SHA256SUMS"
_SUM_LINE = re.compile(r"^[0-9a-f]{64} [ *]\S.*$")


@dataclass(frozen=True)
class BundleFile:
    """One file the bundle describes: ``kind`` text / sidecar / mmproj; ``quant`` the text type (for a
    sidecar: its text file's type; for the mmproj: F16/F32); ``part`` ``(index, count)`` of a split text."""

    kind: str
    quant: str
    path: Path
    part: tuple[int, int] | None = None


def export_files(report) -> list[BundleFile]:
    """The files of an ``ExportReport``: text files (each part), sidecars, the mmproj."""
    files = []
    for t in report.texts:
        parts = t.parts or [t.path]
        files += [BundleFile("text", t.quant, p, (i, len(parts)) if len(parts) > 1 else None)
                  for i, p in enumerate(parts)]
    files += [BundleFile("sidecar", t.quant, t.sidecar) for t in report.texts if t.sidecar]
    if report.mmproj:
        files.append(BundleFile("mmproj", report.mmproj.stem.rsplit("-", 1)[-1].upper(), report.mmproj))
    return files


def check_replaceable(out_dir: Path) -> None:
    """``ExportError`` naming a Modelfile / README.md / SHA256SUMS in ``out_dir`` that so8t did not write."""
    for name in (MODELFILE, CARD, SUMS):
        path = out_dir / name
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        ours = all(_SUM_LINE.match(line) for line in text.splitlines()) if name == SUMS else \
            MARK in text.split("\n", 1)[0]
        if not ours:
            raise ExportError("not written by so8t, refusing to replace it with the export's bundle", path=path,
                              hint="export into another directory, or move the file away")


def _load_reports(reports: dict[str, Path] | None) -> dict[str, dict]:
    loaded = {}
    for quant, path in (reports or {}).items():
        try:
            loaded[quant] = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise So8tError(f"unreadable validation report: {err}", path=path) from err
    return loaded


def primary_type(files: list[BundleFile], sizes: dict[Path, int], reports: dict[str, dict]) -> str | None:
    """The text type the Modelfile and commands use (module docstring); None without text files."""
    totals: dict[str, int] = {}
    for f in files:
        if f.kind == "text":
            totals[f.quant] = totals.get(f.quant, 0) + sizes[f.path]
    passed = [q for q in totals if reports.get(q, {}).get("overall") == "PASS"]
    if passed:
        return min(passed, key=totals.__getitem__)
    return next(iter(totals), None)


def _contents(out_dir, files, so8t_dir, model_name, reports, locate) -> dict[str, str]:
    from so8t.bundle.card import card_text, file_rows
    from so8t.bundle.modelfile import modelfile_text
    from so8t.bundle.sums import sums_text

    loaded = _load_reports(reports)
    sizes = {f.path: locate(f.path).stat().st_size for f in files}
    primary = primary_type(files, sizes, loaded)
    texts = [f.path.name for f in files if f.kind == "text" and f.quant == primary]
    mmproj = next((f.path.name for f in files if f.kind == "mmproj"), None)
    others = [f.path.name for f in files if f.kind == "text" and f.quant != primary and (f.part or (0,))[0] == 0]
    config = json.loads((Path(so8t_dir) / "config.json").read_text(encoding="utf-8"))
    rows = file_rows(files, sizes, loaded)
    report_names = [Path(p).name for p in (reports or {}).values()]
    out = {
        MODELFILE: modelfile_text(Path(so8t_dir), texts, mmproj, others),
        CARD: card_text(model_name, Path(so8t_dir), config, rows, texts[0] if texts else None, mmproj, report_names),
    }
    entries = [(f.path.name, locate(f.path)) for f in files] + [(k, v.encode("utf-8")) for k, v in out.items()]
    out[SUMS] = sums_text(entries)
    return out


def write_bundle(out_dir: Path, files: list[BundleFile], so8t_dir: Path, model_name: str,
                 reports: dict[str, Path] | None = None, locate: Callable[[Path], Path] | None = None,
                 stage: Callable[[Path], Path] | None = None) -> list[Path]:
    """Write Modelfile, README.md and SHA256SUMS into ``out_dir`` for ``files`` (final paths) exported from
    ``so8t_dir``; ``reports``: text type -> validation report JSON; ``locate(final)``: where a file's bytes
    are now (default: at ``final``); ``stage(final)``: a temporary path renamed later by the caller (default:
    the three are renamed together here). Returns the three final paths."""
    out_dir = Path(out_dir)
    contents = _contents(out_dir, files, so8t_dir, model_name, reports, locate or (lambda p: p))
    finals = [out_dir / name for name in contents]
    with contextlib.ExitStack() as stack:
        for final, text in zip(finals, contents.values()):
            tmp = stage(final) if stage else stack.enter_context(atomic_path(final))
            tmp.write_text(text, encoding="utf-8")
    return finals
