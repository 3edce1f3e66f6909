"""The public functions of ``so8t``, re-exported at the package root: ``so8t.convert``, ``so8t.train``,
``so8t.export_gguf``, ``so8t.validate``, ``so8t.run`` and ``so8t.run_pipeline``.

Each is a plain function over the classes that do the work (``Qwen2VLToSO8TConverter``, ``train``,
``SO8TToGGUFConverter``, ``SO8TGGUFValidator``, ``LlamaRuntime``, ``so8t.pipeline.run.run_pipeline``) and
imports them when called, so ``import so8t`` loads neither torch nor llama.cpp. The ``so8t`` command does
its work through these functions only. Errors are ``So8tError`` (one line naming the file and the fix);
every file written is written atomically. Paths may be ``str`` or ``Path``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # names for the annotations only; importing them here would load torch
    from so8t.conversion import ConversionResult
    from so8t.gguf.export import ExportReport
    from so8t.llama.runner import RunResult
    from so8t.pipeline.run import PipelineResult
    from so8t.training import TrainResult
    from so8t.validation import CheckResult, Report

__all__ = ["convert", "export_gguf", "run", "run_pipeline", "train", "validate"]


def convert(
    input_model: str | Path,
    output_model: str | Path,
    *,
    safety_features: bool = False,
    rotation_init: str = "identity",
    seed: int | None = None,
    map: str = "exp",
    hidden_size: int | None = None,
    rotation_dim: int = 8,
    link_weights: bool = False,
    progress: bool = True,
) -> ConversionResult:
    """Convert a Hugging Face Qwen2-VL checkpoint directory into an SO8T checkpoint directory.

    The output holds the source files byte for byte, the gate generators of every decoder layer (and the
    safety head), and config.json with an ``so8t`` section. Identity gates (the default) compute exactly
    what the source model computes.

    Args:
        input_model: Qwen2-VL checkpoint directory (safetensors; validated when opened).
        output_model: SO8T checkpoint directory to write (replaced atomically; not inside the input).
        safety_features: add the ALLOW/ESCALATE/REFUSE safety head (seeded init).
        rotation_init: ``"identity"`` (zero generators) or ``"random"`` (seeded).
        seed: seed of random gates and of the safety head (None means 0).
        map: generator -> rotation map, ``"exp"`` or ``"cayley"``.
        hidden_size: expected text hidden size; a mismatch with config.json is a ``HiddenSizeError``.
        rotation_dim: rotation block size; SO8T requires 8.
        link_weights: hard-link the source's weight files instead of copying them (one file, two names).
        progress: show a progress bar on stderr.

    Returns:
        A ``ConversionResult``: the output path, layers, gates per layer, hidden size, init, map, head.

    Example:
        >>> result = so8t.convert("Qwen2-VL-2B-Instruct", "qwen2vl-so8t", safety_features=True)
        >>> result.path
        PosixPath('qwen2vl-so8t')
    """
    from so8t.conversion import Qwen2VLToSO8TConverter

    converter = Qwen2VLToSO8TConverter(
        input_model, hidden_size=hidden_size, rotation_dim=rotation_dim, safety_features=safety_features,
        rotation_init=rotation_init, seed=seed, map=map, link_weights=link_weights, progress=progress,
    )
    return converter.result(converter.convert(output_model))


def train(so8t_model: str | Path, train_data: str | Path, output_model: str | Path, **options) -> TrainResult:
    """Train every gate's generators and the safety head (LM + class-weighted safety + PET) on a frozen
    Qwen2-VL, and write the trained SO8T checkpoint.

    Args:
        so8t_model: SO8T checkpoint directory (from ``so8t.convert``).
        train_data: JSONL training data (``messages`` + optional ``label``, or ``text``).
        output_model: trained SO8T checkpoint directory to write; the training state goes to
            ``<output_model>.train/``.
        **options: any other field of ``so8t.training.TrainOptions``, with its defaults (one home), e.g.
            ``eval_data``, ``safety_calibration_data``, ``steps``, ``batch_size``, ``lr``, ``device``.

    Returns:
        A ``TrainResult``: output path, steps, seconds, tokens, final eval metrics, whether the head trained.
        Ctrl-C raises ``so8t.training.TrainInterrupted`` naming the last complete state.

    Example:
        >>> result = so8t.train("qwen2vl-so8t", "safety.jsonl", "qwen2vl-so8t-trained", steps=150)
        >>> result.metrics["safety"]["accuracy"]
        0.9
    """
    from so8t.training import TrainOptions
    from so8t.training import train as train_options

    for key in ("eval_data", "safety_calibration_data"):
        if options.get(key) is not None:
            options[key] = Path(options[key])
    return train_options(TrainOptions(
        so8t_model=Path(so8t_model), train_data=Path(train_data), output_model=Path(output_model), **options
    ))


def export_gguf(
    so8t_model: str | Path,
    output: str | Path,
    *,
    quant_types: str | Sequence[str] = ("F16",),
    model_name: str | None = None,
    mmproj: bool = True,
    mmproj_dtype: str = "f16",
    sidecar: bool = True,
    n_threads: int = 0,
    progress: bool = True,
    split_max_size: int | str = 0,
    bundle: bool = True,
    imatrix: str | Path | None = None,
    calibration: str | Path | None = None,
) -> ExportReport:
    """Fold the gates into the weights and write GGUF files that stock llama.cpp runs.

    Writes one ``qwen2vl`` text GGUF per quant type in a single read-and-fold pass, the vision tower as
    ``mmproj-<model_name>-<dtype>.gguf`` and, for an SO8T checkpoint, a ``<text stem>.so8t.gguf`` sidecar
    per text file (gates + safety head).

    Args:
        so8t_model: SO8T checkpoint directory (a plain Qwen2-VL one exports as identity gates, no sidecar).
        output: an existing directory (files ``<model_name>-<TYPE>.gguf``), or a ``.gguf`` path (one type:
            that file; several: ``<stem>-<TYPE>.gguf`` beside it).
        quant_types: names or one comma-separated string: F32 F16 BF16 Q8_0 Q4_0 Q6_K Q5_K_M Q5_K_S Q4_K_M
            Q4_K_S Q3_K_L Q3_K_M Q3_K_S Q2_K IQ4_XS IQ4_NL IQ3_M IQ3_XXS IQ2_M.
        model_name: ``general.name`` and file stem (default: the checkpoint directory's name).
        mmproj: write the mmproj file.
        mmproj_dtype: ``"f16"`` or ``"f32"`` mmproj matrices.
        sidecar: write the SO8T sidecars.
        n_threads: threads of llama.cpp's quantizer (0: all cores).
        progress: show progress bars on stderr.
        split_max_size: 0 writes whole files; else bytes or ``"2G"`` / ``"500M"``: larger text files become
            ``<stem>-00001-of-0000N.gguf`` parts with gguf-split's ``split.*`` keys (so8t/gguf/split.py).
        bundle: also write an Ollama ``Modelfile``, a model card ``README.md`` and ``SHA256SUMS`` (so8t/bundle/).
        imatrix: an importance-matrix GGUF (``so8t imatrix``'s or llama-imatrix's); IQ3_XXS and IQ2_M need one.
        calibration: a text file to collect the importance matrix from first (instead of ``imatrix``).

    Returns:
        An ``ExportReport``: every text file (type, path, size, content hash, per-tensor types, fallbacks,
        sidecar, ``parts`` when split), the mmproj path, ``bundle``, notes, and ``.phases`` (``so8t.profile``);
        ``.summary()`` formats it.

    Example:
        >>> report = so8t.export_gguf("qwen2vl-so8t", "out", quant_types=["F16", "Q4_K_M"])
        >>> [t.path.name for t in report.texts]
        ['qwen2vl-so8t-F16.gguf', 'qwen2vl-so8t-Q4_K_M.gguf']
    """
    from so8t.gguf.export import SO8TToGGUFConverter
    from so8t.gguf.split import parse_split_size

    max_bytes = parse_split_size(split_max_size) if split_max_size not in (0, "0", None) else 0
    return SO8TToGGUFConverter(so8t_model, progress=progress).export(
        output, quant_types=quant_types, model_name=model_name, mmproj=mmproj, mmproj_dtype=mmproj_dtype,
        sidecar=sidecar, n_threads=n_threads, split_max_size=max_bytes, bundle=bundle, imatrix=imatrix,
        calibration=calibration,
    )


def validate(
    gguf_model: str | Path,
    so8t_model: str | Path | None = None,
    *,
    sidecar: str | Path | None = None,
    mmproj: str | Path | None = None,
    run_runtime: bool = True,
    output_report: str | Path | None = None,
    progress: Callable[[CheckResult], None] | None = None,
) -> Report:
    """Validate an exported text GGUF: file, metadata, tensors, SO(8) group laws on the sidecar,
    llama.cpp load and inference, and logit parity against a streamed float64 PyTorch reference.

    Args:
        gguf_model: text GGUF written by ``so8t.export_gguf``.
        so8t_model: the SO8T checkpoint it was exported from; enables the value, consistency and parity
            checks (without it the verdict is at best UNVERIFIED). Not an SO8T checkpoint: ``So8tError``.
        sidecar: the sidecar GGUF (default: ``<stem>.so8t.gguf`` beside the model, if present).
        mmproj: the vision GGUF (default: the single ``mmproj-*.gguf`` beside the model, if any).
        run_runtime: False skips the llama.cpp stage (and so parity).
        output_report: where to write the JSON report (atomically); None writes nothing.
        progress: called with each ``CheckResult`` as it finishes (there are ``len(so8t.validation.CHECKS)``).

    Returns:
        The ``Report``: ``.overall`` (PASS, UNVERIFIED, FAIL or ERROR), ``.passed``, ``.checks``,
        ``.to_json()`` (schema ``so8t/validation/report.schema.json``) and ``.table()``.

    Example:
        >>> report = so8t.validate("out/qwen2vl-so8t-F16.gguf", "qwen2vl-so8t", output_report="r.json")
        >>> report.overall
        'PASS'
    """
    from so8t.validation import SO8TGGUFValidator

    if so8t_model is not None:
        from so8t.checkpoint.so8t_dir import SO8TCheckpoint
        from so8t.errors import So8tError

        if not Path(so8t_model).is_dir():
            raise So8tError("the SO8T checkpoint is not a directory", path=so8t_model)
        SO8TCheckpoint(so8t_model)  # a plain or broken checkpoint: ConfigError / CheckpointError
    report = SO8TGGUFValidator(
        gguf_model, so8t_model=so8t_model, sidecar=sidecar, mmproj=mmproj, run_runtime=run_runtime
    ).run(progress=progress)
    if output_report is not None:
        from so8t.io import atomic_path

        with atomic_path(Path(output_report)) as tmp:
            tmp.write_text(report.to_json() + "\n", encoding="utf-8")
    return report


def run(
    model: str | Path,
    prompt: str,
    *,
    max_tokens: int = 64,
    chat: bool = True,
    image: str | Path | None = None,
    mmproj: str | Path | None = None,
    sidecar: str | Path | None = "auto",
    n_ctx: int = 2048,
    n_threads: int | None = None,
    verbose: bool = False,
    guard: bool = True,
    on_escalate: str = "answer",
    refusal: str | None = None,
) -> RunResult:
    """Greedy generation with stock llama.cpp behind the SO8T safety head's guard (so8t/llama/runner.py).

    Args:
        model: text GGUF written by ``so8t.export_gguf``.
        prompt: the user message (wrapped in the Qwen2-VL chat format unless ``chat=False``).
        max_tokens: tokens to generate (at least 1).
        chat: wrap ``prompt`` in the chat format; False sends it as is.
        image: an image file to ask ``prompt`` about (needs ``mmproj``; no safety verdict then).
        mmproj: the vision GGUF.
        sidecar: the sidecar GGUF; ``"auto"``: ``<model stem>.so8t.gguf`` if present; None: no verdict.
        n_ctx: context length.
        n_threads: llama.cpp threads (default: all cores, at most 8).
        verbose: llama.cpp's own log on stderr.
        guard: decide with the trained safety head before the first token (same context, same prefill);
            REFUSE generates nothing and returns ``refusal``.
        on_escalate: ``"answer"`` (default: answer, the verdict says ESCALATE) or ``"refuse"``.
        refusal: the text returned for a refused request (default ``so8t.llama.runner.DEFAULT_REFUSAL``).

    Returns:
        A ``RunResult``: ``.text``, ``.refused``, ``.generation`` (tokens and tokens/s from llama.cpp's perf
        counters; None for an image), ``.safety`` (the verdict, or None) and ``.safety_status``
        (``"verdict"``, ``"untrained"``, ``"no-head"``, ``"no-sidecar"``, ``"image"`` or ``"off"``: no
        verdict, and the guard was not active).

    Example:
        >>> result = so8t.run("out/qwen2vl-so8t-F16.gguf", "Hello!", max_tokens=16)
        >>> result.text, result.safety_status
        ('Hello! How can I help?', 'verdict')
    """
    from so8t.llama.runner import DEFAULT_REFUSAL, run_prompt

    return run_prompt(model, prompt, max_tokens=max_tokens, chat=chat, image=image, mmproj=mmproj,
                      sidecar=sidecar, n_ctx=n_ctx, n_threads=n_threads, verbose=verbose, guard=guard,
                      on_escalate=on_escalate, refusal=DEFAULT_REFUSAL if refusal is None else refusal)


def run_pipeline(
    input_model: str | Path, output_dir: str | Path, *, log: Callable[[str], None] = print, **options
) -> PipelineResult:
    """The whole job: environment and input check, convert, (train,) export, validate, summary.json.

    Args:
        input_model: Qwen2-VL checkpoint directory.
        output_dir: where everything goes (``<model>-so8t/``, ``gguf/``, ``reports/``, ``summary.json``;
            layout in ``so8t.pipeline.run``); built in a temporary sibling and renamed.
        log: called with one line per step start and end.
        **options: any other field of ``so8t.pipeline.run.PipelineOptions``, with its defaults, e.g.
            ``quant_types``, ``model_name``, ``validate``, ``train_data``, ``safety_calibration_data``.

    Returns:
        A ``PipelineResult``: steps with timings, every file written with its validation verdict, ``.ok``.

    Example:
        >>> result = so8t.run_pipeline("Qwen2-VL-2B-Instruct", "so8t-out", quant_types=["F16"])
        >>> result.ok
        True
    """
    from so8t.pipeline.run import PipelineOptions
    from so8t.pipeline.run import run_pipeline as run_options

    for key in ("train_data", "eval_data", "safety_calibration_data"):
        if options.get(key) is not None:
            options[key] = Path(options[key])
    return run_options(PipelineOptions(Path(input_model), Path(output_dir), **options), log=log)
