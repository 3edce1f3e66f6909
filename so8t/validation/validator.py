"""``SO8TGGUFValidator``: every check of an exported SO8T GGUF set, in order, into one ``Report``.

Order (each later stage needs the earlier ones to pass, see ``context.run_check``):

1. file: the text GGUF exists, gguf-py parses it, its tensor data lies inside the file; sidecar and mmproj read;
2. metadata: what llama.cpp needs for ``qwen2vl`` (keys, types, tokenizer), the ``so8t.*`` keys,
   consistency with the sidecar and the checkpoint; the mmproj's clip keys (projection = text hidden);
3. tensors: inventory, shapes, types, finite values, content hash, values vs the folded checkpoint; mmproj
   inventory (H4's name table) and finite values;
4. group: the sidecar's rotations in SO(8), equal to the map of its generators, equal to the checkpoint;
5. runtime: llama.cpp loads the file and runs the probe prompts (child process), answers an image prompt
   with the mmproj;
6. parity: llama.cpp's logits vs the streamed float64 PyTorch reference (so8t/validation/checks_parity.py).

``run()`` never raises on a bad file: a parse error, a corrupt value or a crashing llama.cpp is a FAIL
entry; an exception inside a check is an ERROR entry. Sibling files follow the exporter's naming
(``so8t.gguf.export``): sidecar ``<stem>.so8t.gguf``, mmproj ``mmproj-*.gguf`` in the same directory.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

from so8t.llama.runtime import default_sidecar
from so8t.validation import (
    checks_file,
    checks_group,
    checks_metadata,
    checks_mmproj,
    checks_parity,
    checks_runtime,
    checks_tensors,
    checks_tokenizer,
)
from so8t.validation.context import Check, Context, run_check
from so8t.validation.report import Report

#: Every check, in run order.
CHECKS: tuple[Check, ...] = (
    checks_file.file_exists,
    checks_file.file_readable,
    checks_file.file_layout,
    checks_group.sidecar_readable,
    checks_file.mmproj_readable,
    checks_metadata.architecture,
    checks_metadata.hparams_present,
    checks_metadata.rope_sections,
    checks_metadata.file_type,
    checks_tokenizer.tokenizer_keys,
    checks_tokenizer.vocabulary,
    checks_metadata.so8t_keys,
    checks_metadata.sidecar_consistency,
    checks_metadata.checkpoint_consistency,
    checks_mmproj.mmproj_metadata,
    checks_tensors.inventory,
    checks_tensors.shapes,
    checks_tensors.types,
    checks_tensors.finite,
    checks_tensors.content_hash_matches,
    checks_tensors.values_vs_source,
    checks_tensors.mmproj_tensors,
    checks_group.rotations_in_so8,
    checks_group.rotations_match_generators,
    checks_group.sidecar_matches_checkpoint,
    checks_group.safety_head_finite,
    checks_runtime.llama_load,
    checks_runtime.mmproj_image,
    checks_parity.logits_parity,
)


def checks_for(*names: str, checks: tuple[Check, ...] = CHECKS) -> tuple[Check, ...]:
    """The checks ``names`` with every check they require, transitively, in run order: the least a caller
    that wants only those verdicts runs (``SO8TGGUFValidator(..., checks=checks_for("parity.logits"))``).

    A ``category:X`` requirement asks only that no check of category X that ran failed
    (``Context.blocking``), so it adds no check; a named requirement adds that check.
    """
    by_name = {c.name: c for c in checks}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"no such check: {', '.join(unknown)}")
    wanted: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(r for r in by_name[name].requires if not r.startswith("category:"))
    return tuple(c for c in checks if c.name in wanted)


def mmproj_for(gguf_model: str | Path) -> Path | None:
    """The single ``mmproj-*.gguf`` in the GGUF's directory (None when there is none or several)."""
    path = Path(gguf_model)
    found = sorted(path.parent.glob("mmproj-*.gguf")) if path.parent.is_dir() else []
    return found[0] if len(found) == 1 else None


def tool_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist, key in (("so8t", "so8t"), ("gguf", "gguf"), ("numpy", "numpy"), ("torch", "torch"),
                      ("llama_cpp_python", "llama_cpp"), ("transformers", "transformers")):
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = None
    return versions


class SO8TGGUFValidator:
    """Validate an exported text GGUF, with its sidecar, mmproj and (optionally) the SO8T checkpoint.

    Args:
        gguf_model: the text GGUF (``general.architecture = "qwen2vl"``).
        so8t_model: the SO8T checkpoint directory it was exported from; enables the value, consistency
            and parity checks (SKIP without it).
        sidecar: the ``.so8t.gguf`` sidecar; default: the sibling ``<stem>.so8t.gguf`` if present.
        mmproj: the vision GGUF; default: the single ``mmproj-*.gguf`` next to the model, if any.
        run_runtime: False skips the llama.cpp stage (used by fuzzing: structure must fail first).
        reference: a :class:`~so8t.validation.parity_reference.ParityReference` of ``so8t_model`` shared with
            other validations of the same run (the pipeline passes one); default: one of this run's own.
        image_checked_with: a text GGUF of the same model that this run already answered an image prompt
            with, with this ``mmproj``: ``runtime.mmproj_image`` then names it instead of loading both models
            again; default: the check runs.
        image_text_file: the text GGUF (of the same model, another type) that ``runtime.mmproj_image``
            pairs with the mmproj; default: ``gguf_model``. The pipeline passes its smallest file: the
            llama.cpp process of the image prompt holds both models, so that is its least memory.

    Example:
        >>> report = SO8TGGUFValidator("out/model-F16.gguf", so8t_model="qwen2vl-so8t").run()
        >>> report.overall, report.to_json()
    """

    def __init__(self, gguf_model: str | Path, so8t_model: str | Path | None = None,
                 sidecar: str | Path | None = None, mmproj: str | Path | None = None,
                 run_runtime: bool = True, checks: tuple[Check, ...] = CHECKS, reference=None,
                 image_checked_with: str | Path | None = None, image_text_file: str | Path | None = None):
        self.gguf_model = Path(gguf_model)
        self.so8t_model = Path(so8t_model) if so8t_model is not None else None
        self.sidecar = Path(sidecar) if sidecar is not None else default_sidecar(self.gguf_model)
        self.mmproj = Path(mmproj) if mmproj is not None else mmproj_for(self.gguf_model)
        self.run_runtime = run_runtime
        self.checks = checks
        self.reference = reference
        self.image_checked_with = Path(image_checked_with) if image_checked_with is not None else None
        self.image_text_file = Path(image_text_file) if image_text_file is not None else None

    def run(self, progress=None) -> Report:
        """Run every check; ``progress(result)`` is called after each one (for a CLI bar)."""
        start = time.perf_counter()
        ctx = Context(self.gguf_model, self.so8t_model, self.sidecar, self.mmproj, self.run_runtime,
                      reference=self.reference, image_checked_with=self.image_checked_with,
                      image_text_file=self.image_text_file)
        try:
            for chk in self.checks:
                result = run_check(ctx, chk)
                if progress is not None:
                    progress(result)
        finally:
            ctx.reader = None  # release the memory map
        report = Report(checks=ctx.results, tool_versions=tool_versions())
        for role, path in (("gguf_model", self.gguf_model), ("so8t_model", self.so8t_model),
                           ("sidecar", self.sidecar), ("mmproj", self.mmproj)):
            if path is not None:
                size = path.stat().st_size if path.is_file() else None
                report.files[role] = {"path": str(path), "size_bytes": size}
        report.duration_s = time.perf_counter() - start
        return report
