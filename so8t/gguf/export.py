"""``SO8TToGGUFConverter``: an SO8T checkpoint -> text GGUF(s) + mmproj + sidecar(s) for llama.cpp.

One export reads and folds the checkpoint once (``so8t.fold.iter_folded_tensors``) and writes every
requested type in that single pass (``text.write_text_ggufs``): float types rounded here, block types
(Q8_0, Q4_0, K-quants) with llama.cpp's per-tensor mix encoded by ggml's kernels (``quant``). No
intermediate file is written.

Outputs (all written atomically: an exception or Ctrl-C leaves none of them behind):

* text: ``out`` itself when it ends in ``.gguf`` and one type is asked for; ``<stem>-<TYPE>.gguf`` next
  to it for several types; ``<out>/<model_name>-<TYPE>.gguf`` when ``out`` is a directory;
* sidecar: ``<text stem>.so8t.gguf`` per text file (gates + safety head, linked by the text file's
  content hash); only for SO8T checkpoints, a plain Qwen2-VL checkpoint exports as identity gates;
* mmproj: ``mmproj-<model_name>-<dtype>.gguf`` in the same directory;
* importance matrix (``imatrix=`` a file, or ``calibration=`` a text to collect one from): a copy in
  ``<model_name>.imatrix.gguf`` beside the text files, named by their ``quantize.imatrix.file`` key, so
  the validator finds the importance its baselines need.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from so8t import profile
from so8t.errors import ExportError
from so8t.gguf import metadata, quant, text
from so8t.gguf.tokenizer import read_tokenizer
from so8t.io import atomic_path, scratch_path


@dataclass
class TextOutput:
    quant: str
    path: Path
    size: int
    seconds: float
    content_hash: str
    tensor_types: dict[str, str]
    fallbacks: list[str]
    sidecar: Path | None = None
    parts: list[Path] = field(default_factory=list)  # the files of a split text GGUF (``path``: the first)


@dataclass
class ExportReport:
    texts: list[TextOutput] = field(default_factory=list)
    mmproj: Path | None = None
    pass_seconds: float = 0.0  # the one read + fold + encode pass shared by all types
    notes: list[str] = field(default_factory=list)
    bundle: list[Path] = field(default_factory=list)  # Modelfile, README.md, SHA256SUMS (so8t.bundle)
    #: where the time went, text pass and mmproj together (``so8t.profile``: read, fold, cast, ...)
    phases: profile.Phases | None = None

    def summary(self) -> str:
        lines = []
        for t in self.texts:
            lines.append(f"{t.quant:7s} {t.size / 2**20:9.1f} MiB  {t.seconds:6.1f} s  {t.path}")
            if len(t.parts) > 1:
                lines.append(f"        split into {len(t.parts)} parts: {t.parts[0].name} ... {t.parts[-1].name}")
            lines += [f"        fallback: {f}" for f in t.fallbacks]
            if t.sidecar:
                lines.append(f"        sidecar: {t.sidecar}")
        if self.mmproj:
            lines.append(f"mmproj  {self.mmproj.stat().st_size / 2**20:9.1f} MiB            {self.mmproj}")
        lines += [f"bundle  {p}" for p in self.bundle]
        return "\n".join(lines + self.notes)


class SO8TToGGUFConverter:
    """Export an SO8T checkpoint directory (or a plain Qwen2-VL checkpoint) to GGUF files.

    Example:
        >>> SO8TToGGUFConverter("qwen2vl-so8t").export("out/", quant_types=["F16", "Q4_K_M"])
    """

    def __init__(self, so8t_dir: str | Path, progress: bool = True):
        from so8t.checkpoint.config import read_config

        self.path = Path(so8t_dir)
        self.model_config = read_config(self.path)  # typed and validated once; the tensors when read
        self.config = self.model_config.raw
        self.is_so8t = "so8t" in self.config
        self.hparams = text.TextHParams.from_text(self.model_config.text, self.model_config.path)
        self.progress = progress

    def _tensors(self):
        """The text pass's stream; tensors over ``text.READ_WHOLE_BYTES`` (the embedding) come unread,
        as row slices the writer reads chunk by chunk."""
        if self.is_so8t:
            from so8t.fold import iter_folded_tensors

            return iter_folded_tensors(self.path, part="text", lazy_above=text.READ_WHOLE_BYTES)
        from so8t.checkpoint import CheckpointReader
        from so8t.checkpoint.lazy_rows import tensor_or_rows

        reader = CheckpointReader(self.path)
        return ((name, tensor_or_rows(reader, name, text.READ_WHOLE_BYTES)) for name in reader.names())

    def text_paths(
        self, out: str | Path, quant_types: list[quant.QuantType], model_name: str
    ) -> dict[str, Path]:
        out = Path(out)
        if out.suffix == ".gguf":
            if len(quant_types) == 1:
                return {quant_types[0].name: out}
            return {q.name: out.with_name(f"{out.stem}-{q.name}.gguf") for q in quant_types}
        return {q.name: out / f"{model_name}-{q.name}.gguf" for q in quant_types}

    def export(
        self,
        out: str | Path,
        quant_types=("F16",),
        model_name: str | None = None,
        mmproj: bool = True,
        mmproj_dtype: str = "f16",
        sidecar: bool = True,
        n_threads: int = 0,
        split_max_size: int = 0,
        bundle: bool = True,
        imatrix: str | Path | None = None,
        calibration: str | Path | None = None,
    ) -> ExportReport:
        """Write the files (see the module docstring) and return what was written, with timings (per
        phase: ``report.phases``) and every quantization fallback. ``split_max_size`` > 0: text files
        larger than that many bytes are written as parts (``so8t.gguf.split``); ``bundle``: also write the
        Modelfile, README.md and SHA256SUMS (``so8t.bundle``). ``imatrix``: an importance-matrix GGUF
        (``so8t imatrix`` or llama-imatrix) weighting the block types; ``calibration``: a text file to
        collect one from first (not both)."""
        self._imatrix_source = (imatrix, calibration)
        with profile.collect() as phases:
            report = self._export(out, quant_types, model_name, mmproj, mmproj_dtype, sidecar, n_threads,
                                  split_max_size, bundle)
        report.phases = phases
        return report

    def _export(self, out, quant_types, model_name, mmproj, mmproj_dtype, sidecar, n_threads, split_max_size,
                bundle) -> ExportReport:
        qts = quant.parse_quant_types(list(quant_types) if not isinstance(quant_types, str) else quant_types)
        model_name = model_name or self.path.name
        paths = self.text_paths(out, qts, model_name)
        out_dir = next(iter(paths.values())).parent
        if not out_dir.is_dir():
            raise ExportError("output directory does not exist", path=out_dir)
        if bundle:
            from so8t.bundle import check_replaceable

            check_replaceable(out_dir)
        quant.require_imatrix(qts, any(self._imatrix_source))
        report = ExportReport()
        tokenizer = read_tokenizer(self.path, self.hparams.vocab_size)
        keys = metadata.so8t_keys(self.config)
        with contextlib.ExitStack() as stack:  # every output is renamed into place only if all succeed
            staged: dict[Path, Path] = {}  # final path -> where its bytes are until the renames

            def stage(final: Path) -> Path:
                staged[final] = stack.enter_context(atomic_path(final))
                return staged[final]

            whole = (lambda p: stack.enter_context(scratch_path(p))) if split_max_size else stage
            tmp = {q.name: whole(paths[q.name]) for q in qts}
            self.imatrix = self._prepare_imatrix(out_dir / f"{model_name}.imatrix.gguf", stage, report)
            job = None
            if mmproj:
                report.mmproj = out_dir / f"mmproj-{model_name}-{mmproj_dtype}.gguf"
                job = stack.enter_context(self._mmproj_job(report.mmproj, mmproj_dtype, model_name, stage(report.mmproj)))
            self._write_texts(report, qts, paths, tmp, tokenizer, keys, model_name, n_threads, job)
            if split_max_size:
                _split_texts(report, tmp, split_max_size, stage, staged)
            if sidecar and self.is_so8t:
                from so8t.gguf.sidecar import write_sidecar

                for t in report.texts:
                    t.sidecar = t.path.with_name(t.path.name[: -len(".gguf")] + ".so8t.gguf")
                    write_sidecar(self.path, stage(t.sidecar), t.content_hash, model_name=model_name)
            elif sidecar:
                report.notes.append("no sidecar: the input is a plain Qwen2-VL checkpoint (no SO8T gates)")
            if job is not None:
                job.result()
            if bundle:
                from so8t.bundle import export_files, write_bundle

                report.bundle = write_bundle(out_dir, export_files(report), self.path, model_name,
                                             locate=lambda p: staged.get(p, p), stage=stage)
        return report

    def _write_texts(self, report, qts, paths, tmp, tokenizer, keys, model_name, n_threads, job) -> None:
        """The one text pass, into the temporary paths ``tmp`` (per type); fills ``report.texts``. A
        failed mmproj ``job`` stops it before its next tensor."""
        outputs = {q.name: (q, tmp[q.name]) for q in qts}
        tensors = self._tensors() if job is None else job.watch(self._tensors())
        start = time.perf_counter()
        results = text.write_text_ggufs(
            tensors,
            self.hparams,
            tokenizer,
            outputs,
            keys,
            model_name,
            progress=self.progress,
            threads=n_threads,
            imatrix=self.imatrix,
        )
        report.pass_seconds = time.perf_counter() - start
        for q in qts:
            r = results[q.name]
            report.texts.append(_text_output(q.name, paths[q.name], r.path, report.pass_seconds, r))

    def _prepare_imatrix(self, final: Path, stage, report: ExportReport):
        """The importance matrix of this export (None without one), checked against the model and written
        to ``final`` with the other outputs (``so8t.imatrix``)."""
        from so8t.imatrix import collect, file

        source, calibration = self._imatrix_source
        if source is None and calibration is None:
            return None
        if source is not None and calibration is not None:
            raise ExportError("give an importance matrix or a calibration text, not both")
        if source is not None:
            imatrix = file.read_imatrix(source)
        else:
            text, name = collect.read_calibration(calibration)
            imatrix, seconds = collect.collect_imatrix(self.path, text, name, progress=self.progress)
            report.notes.append(f"importance matrix collected from {calibration} in {seconds:.1f} s")
        imatrix.check_model(collect.model_matrices(self.hparams), where=source)
        file.write_imatrix(imatrix, stage(final))
        imatrix.path = final
        report.notes.append(f"importance matrix: {final}")
        return imatrix

    def _mmproj_job(self, final: Path, dtype: str, model_name: str, tmp: Path) -> _MmprojJob:
        from so8t.gguf.vision import MmprojPlan

        plan = MmprojPlan(self.path, dtype, model_name, final)  # bad vision input fails here, at once
        return _MmprojJob(plan, tmp, self.progress)


class _MmprojJob:
    """The mmproj data written on its own thread while the text pass runs (``with``: started on entry).

    The text pass leaves the cores partly idle (its reader, writer and main threads wait on each other),
    and the mmproj needs no quantizer. Side by side, and with the fold in chunks (``so8t.fold``), the
    full-size F16 + Q8_0 + Q4_K_M + mmproj export took 88 s instead of 109 s.

    ``result()`` waits and raises the thread's error; ``watch(stream)`` raises it as soon as it happened,
    between two tensors of the text pass (an mmproj value beyond F16 need not wait for the text pass to
    end). Leaving the block on an error cancels the thread before its next tensor and waits for it, so
    nothing is written after the export's temporary files are removed."""

    def __init__(self, plan, path: Path, progress: bool):
        self._plan, self._path, self._progress = plan, path, progress
        self._cancel = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="so8t-mmproj")
        self._future = None

    def __enter__(self) -> _MmprojJob:  # noqa: PYI034
        self._future = self._pool.submit(self._plan.write, self._path, self._progress, self._cancel)
        return self

    def result(self) -> None:
        self._future.result()

    def watch(self, stream):
        """``stream``'s items, raising the mmproj's error before the next one once the job has failed."""
        for item in stream:
            if self._future.done() and self._future.exception() is not None:
                raise self._future.exception()
            yield item

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._cancel.set()
        self._pool.shutdown(wait=True)


def _split_texts(report: ExportReport, tmp: dict[str, Path], max_bytes: int, stage, staged: dict) -> None:
    """Cut each whole text file (at ``tmp[type]``) into parts of at most ``max_bytes`` (``so8t.gguf.split``);
    ``path`` becomes the first part (what llama.cpp is given), ``size`` the sum of the parts' sizes."""
    from so8t.gguf.split import split_gguf

    for t in report.texts:
        t.parts = split_gguf(tmp[t.quant], t.path, max_bytes, stage)
        t.path = t.parts[0]
        t.size = sum(staged[p].stat().st_size for p in t.parts)


def _text_output(name: str, final: Path, written: Path, seconds: float, r: text.TextResult) -> TextOutput:
    return TextOutput(
        quant=name,
        path=final,
        size=written.stat().st_size,
        seconds=seconds,
        content_hash=r.content_hash,
        tensor_types=r.tensor_types,
        fallbacks=r.fallbacks,
    )
