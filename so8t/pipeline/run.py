"""``so8t pipeline``: environment check -> input check -> convert -> export -> validate -> summary.

Output layout under ``output_dir`` (the whole directory is built in a temporary sibling and renamed when
conversion and export succeeded, so a failure or Ctrl-C leaves nothing at ``output_dir``):

    <output_dir>/
      <model>-so8t/                  SO8T checkpoint (source weights + gates [+ safety head])
      gguf/<model>-<TYPE>.gguf       text GGUF per quant type (gates folded; architecture qwen2vl)
      gguf/<model>-<TYPE>.so8t.gguf  SO8T sidecar per text file (gates, rotations, safety head)
      gguf/mmproj-<model>-f16.gguf   vision tower for llama.cpp's multimodal loader
      gguf/Modelfile, README.md, SHA256SUMS
                                     the bundle (so8t.bundle): Ollama recipe, model card, sums; written by
                                     the export, again after validation with the reports' verdicts and KL
      reports/validate-<TYPE>.json   validator report per quant type
      summary.json                   what the final table shows, machine-readable

Validation runs after the rename on the files at their final paths; a failed validation keeps the (complete)
files and their reports, and the pipeline exits non-zero.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from so8t.errors import So8tError
from so8t.io import atomic_path
from so8t.pipeline import environment

SUMMARY_FILE = "summary.json"
DEFAULT_QUANT_TYPES = ("F16", "Q8_0", "Q4_K_M")


@dataclass
class PipelineOptions:
    input_model: Path
    output_dir: Path
    quant_types: list[str] = field(default_factory=lambda: list(DEFAULT_QUANT_TYPES))
    model_name: str | None = None
    rotation_init: str = "identity"
    seed: int = 0
    safety_features: bool = True
    validate: bool = True
    overwrite: bool = False
    progress: bool = True
    train_data: Path | None = None  # when given: so8t train between convert and export
    eval_data: Path | None = None
    safety_calibration_data: Path | None = None
    train_steps: int = 150
    train_batch_size: int = 16


@dataclass
class Step:
    name: str
    seconds: float
    detail: str = ""


@dataclass
class FileRow:
    kind: str
    quant: str
    path: str
    size: int
    seconds: float | None = None
    validation: str | None = None
    parity: str | None = None
    notes: list[str] = field(default_factory=list)  # failed checks and warnings, printed under the table
    cost_ratio: float | None = None  # quantization cost: SO8T model / plain source model (block types)


@dataclass
class PipelineResult:
    output_dir: Path
    environment: dict
    steps: list[Step] = field(default_factory=list)
    files: list[FileRow] = field(default_factory=list)
    ok: bool = True
    validated: bool = False
    training: dict | None = None  # eval metrics of the train step
    warnings: list[str] = field(default_factory=list)  # information for the user; never a failure

    def to_json(self) -> dict:
        return {
            "output_dir": str(self.output_dir),
            "ok": self.ok,
            "validated": self.validated,
            "training": self.training,
            "environment": self.environment,
            "steps": [asdict(s) for s in self.steps],
            "files": [asdict(f) for f in self.files],
            "warnings": self.warnings,
        }


def _prepare_output(options: PipelineOptions) -> None:
    out = options.output_dir
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and not options.overwrite:
        raise So8tError("output directory exists and is not empty", path=out, hint="pass --overwrite")
    if occupied and not (out / SUMMARY_FILE).is_file():
        raise So8tError(
            f"refusing to overwrite a directory that is not a previous pipeline output (no {SUMMARY_FILE})",
            path=out,
        )
    out.parent.mkdir(parents=True, exist_ok=True)


class _Timer:
    def __init__(self, result: PipelineResult, log: Callable[[str], None]):
        self.result, self.log = result, log

    def step(self, name: str, fn: Callable[[], str | None]):
        self.log(f"[so8t pipeline] {name} ...")
        start = time.perf_counter()
        detail = fn() or ""
        seconds = time.perf_counter() - start
        self.result.steps.append(Step(name, seconds, detail))
        self.log(f"[so8t pipeline] {name}: done in {seconds:.1f} s{f' ({detail})' if detail else ''}")


def run_pipeline(options: PipelineOptions, log: Callable[[str], None] = print) -> PipelineResult:
    """Run every step; raise ``So8tError`` on bad input or a failed step (nothing left at the output)."""
    from so8t.gguf.quant import parse_quant_types

    quant_names = [q.name for q in parse_quant_types(options.quant_types)]
    out = options.output_dir
    _prepare_output(options)
    result, name = _check_inputs(options, quant_names)
    timer = _Timer(result, log)
    so8t_dir = out / f"{name}-so8t"
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "gguf").mkdir()
        report = _build(options, timer, tmp / so8t_dir.name, tmp / "gguf", name, quant_names)
        # Keep a marker so a later --overwrite knows this directory is ours, even if validation fails.
        (tmp / SUMMARY_FILE).write_text(json.dumps({"status": "exported"}) + "\n")
    _record_files(result, report, out / "gguf")
    if options.validate:
        timer.step("validate", lambda: _validate(result, so8t_dir, out / "reports"))
        result.validated = True
        timer.step("bundle", lambda: _bundle(result, so8t_dir, out / "gguf", out / "reports", name))
    with atomic_path(out / SUMMARY_FILE) as tmp_summary:
        tmp_summary.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result


def _check_inputs(options: PipelineOptions, quant_names: list[str]) -> tuple[PipelineResult, str]:
    """The environment + input check step: a broken checkpoint or too little disk stops here. Returns the
    result so far and the model name (``model_name``, else the input directory's name)."""
    from so8t.analyze import analyze_checkpoint

    start = time.perf_counter()
    analysis = analyze_checkpoint(options.input_model)
    name = options.model_name or Path(analysis["path"]).name
    env = environment.check_environment(
        options.output_dir, analysis["total_bytes"], analysis["params_total"], quant_names
    )
    environment.require(env)
    result = PipelineResult(options.output_dir, {"python": env.python, **env.versions,
                                                 "free_bytes": env.free_bytes, "needed_bytes": env.needed_bytes,
                                                 "llama_build": env.llama_build})
    detail = f"{analysis['params_total']:,} parameters, {env.needed_bytes / 1e9:.2f} of {env.free_bytes / 1e9:.0f} GB"
    result.steps.append(Step("environment + input check", time.perf_counter() - start, detail))
    return result, name


def _build(options: PipelineOptions, timer: _Timer, so8t_dir: Path, gguf_dir: Path, name: str,
           quant_names: list[str]):
    """The convert, (train,) and export steps into the temporary output; returns the ``ExportReport``."""
    from so8t.conversion import Qwen2VLToSO8TConverter
    from so8t.gguf.export import SO8TToGGUFConverter

    converter = Qwen2VLToSO8TConverter(
        options.input_model,
        safety_features=options.safety_features,
        rotation_init=options.rotation_init,
        seed=options.seed,
        progress=options.progress,
    )

    def convert() -> str:
        converter.convert(so8t_dir)
        head = ", safety head" if options.safety_features else ""
        return f"{options.rotation_init} gates{head}"

    timer.step("convert", convert)
    if options.train_data is not None:
        timer.step("train", lambda: _train_step(options, so8t_dir, timer.result))
    exported = {}

    def export() -> str:
        exported["report"] = SO8TToGGUFConverter(so8t_dir, progress=options.progress).export(
            gguf_dir, quant_types=quant_names, model_name=name
        )
        return ", ".join(quant_names)

    timer.step("export", export)
    return exported["report"]


def _record_files(result: PipelineResult, report, gguf_dir: Path) -> None:
    """One ``FileRow`` per file of the export ``report``, at its final path under ``gguf_dir``."""
    for text in report.texts:
        final = gguf_dir / text.path.name
        result.files.append(FileRow("text", text.quant, str(final), final.stat().st_size, text.seconds))
        if text.sidecar:
            side = gguf_dir / text.sidecar.name
            result.files.append(FileRow("sidecar", text.quant, str(side), side.stat().st_size))
    if report.mmproj:
        mm = gguf_dir / report.mmproj.name
        dtype = mm.stem.rsplit("-", 1)[-1].upper()  # mmproj-<model>-<dtype>.gguf
        result.files.append(FileRow("mmproj", dtype, str(mm), mm.stat().st_size))


def _bundle(result: PipelineResult, so8t_dir: Path, gguf_dir: Path, reports_dir: Path, name: str) -> str:
    """The export's bundle (so8t.bundle) written again with the validation reports, so the card's verdicts
    and KL are the reports'."""
    from so8t.bundle import BundleFile, write_bundle

    files = [BundleFile(f.kind, f.quant, Path(f.path)) for f in result.files]
    reports = {f.quant: reports_dir / f"validate-{f.quant}.json" for f in result.files if f.kind == "text"}
    return ", ".join(p.name for p in write_bundle(gguf_dir, files, so8t_dir, name, reports=reports))


def _train_step(options: PipelineOptions, so8t_dir: Path, result: PipelineResult) -> str:
    """``so8t train`` on the converted checkpoint, in place (through a sibling; state dir removed)."""
    import shutil

    from so8t.training import TrainOptions, train

    trained = so8t_dir.with_name(so8t_dir.name + "-trained")
    run = train(TrainOptions(
        so8t_model=so8t_dir, train_data=options.train_data, eval_data=options.eval_data,
        safety_calibration_data=options.safety_calibration_data, output_model=trained,
        steps=options.train_steps, batch_size=options.train_batch_size,
        seed=options.seed, save_every=0, progress=options.progress,
    ))
    shutil.rmtree(so8t_dir)
    shutil.rmtree(trained.with_name(trained.name + ".train"), ignore_errors=True)
    trained.rename(so8t_dir)
    result.training = run.metrics
    safety = (run.metrics or {}).get("safety") or {}
    accuracy = safety.get("accuracy")
    detail = f"{run.steps} steps, {run.tokens / max(run.step_seconds, 1e-9):.0f} tokens/s"
    if accuracy is not None:
        detail += f", eval safety accuracy {accuracy:.1%} (majority {safety['majority_baseline']:.1%})"
    return detail


def _validate(result: PipelineResult, so8t_dir: Path, reports_dir: Path) -> str:
    from so8t.gguf.parity import SENSITIVITY_WARN
    from so8t.pipeline.validation import cheapest_close_type, file_notes, parity_summary, validate_text_file
    from so8t.validation.parity_reference import ParityReference
    from so8t.validation.report import PARITY_CHECK

    reports_dir.mkdir(exist_ok=True)
    reference = ParityReference(so8t_dir)
    failed = []
    mmproj = next((Path(f.path) for f in result.files if f.kind == "mmproj"), None)
    texts = [f for f in result.files if f.kind == "text"]
    smallest = Path(min(texts, key=lambda f: f.size).path) if texts else None  # the image prompt's text file
    image_checked_with = None
    for row in texts:
        sidecar = next((Path(f.path) for f in result.files if f.kind == "sidecar" and f.quant == row.quant), None)
        report = validate_text_file(Path(row.path), so8t_dir, sidecar, mmproj, reports_dir / f"validate-{row.quant}.json",
                                    reference, image_checked_with, smallest)
        image = report.get("runtime.mmproj_image")  # every check has an entry
        if image_checked_with is None and image.status == "PASS":
            image_checked_with = smallest
        parity = report.get(PARITY_CHECK)
        row.validation, row.parity, row.notes = report.overall, parity_summary(parity), file_notes(report)
        row.cost_ratio = ((parity.details or {}).get("quantization_cost") or {}).get("ratio")
        if row.validation != "PASS":
            failed.append(row.quant)
    sensitive = [r for r in texts if r.cost_ratio is not None and r.cost_ratio > SENSITIVITY_WARN]
    if sensitive:
        best = cheapest_close_type(texts, SENSITIVITY_WARN)
        result.warnings.append(
            f"the gates make {', '.join(f'{r.quant} ({r.cost_ratio:.3g}x)' for r in sensitive)} cost more than "
            f"{SENSITIVITY_WARN:g}x the KL the plain source model pays for the same type; "
            + (f"cheapest type within {SENSITIVITY_WARN:g}x: {best}" if best else
               f"no validated block type stays within {SENSITIVITY_WARN:g}x"))
    result.ok = not failed
    return "all PASS" if not failed else "FAIL: " + ", ".join(failed)
