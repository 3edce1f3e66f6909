"""One prompt through ``LlamaRuntime``: greedy text, llama.cpp's perf counters, the sidecar's verdict.

What ``so8t.run`` (and ``so8t run``) does. The safety verdict comes only from a head that ``so8t train``
trained (``so8t.safety_head.trained`` in the sidecar); ``RunResult.safety_status`` says why there is none
otherwise: ``"no-sidecar"`` (none given or found), ``"no-head"`` (the sidecar has no safety head),
``"untrained"`` (a head with its random init), ``"image"`` (image prompts get no verdict).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from so8t.errors import So8tError

#: ``RunResult.safety_status`` values.
SAFETY_STATUSES = ("verdict", "untrained", "no-head", "no-sidecar", "image")


@dataclass
class RunResult:
    text: str
    prompt: str  # what llama.cpp was given (chat-formatted unless ``chat=False``; the question for images)
    sidecar: Path | None
    safety_status: str
    generation: object | None = None  # so8t.runtime.Generation; None for an image prompt
    safety: object | None = None  # so8t.safety verdict (label, probabilities) when status is "verdict"


def resolve_sidecar(model: str | Path, sidecar: str | Path | None) -> Path | None:
    """``"auto"``: the exporter's sibling ``<stem>.so8t.gguf`` if present; ``"none"``/None: no sidecar."""
    from so8t.runtime import default_sidecar

    if sidecar == "auto":
        return default_sidecar(model)
    if sidecar is None or sidecar == "none":
        return None
    return Path(sidecar)


def run_prompt(model, prompt: str, *, max_tokens: int = 64, chat: bool = True, image=None, mmproj=None,
               sidecar="auto", n_ctx: int = 2048, n_threads: int | None = None, verbose: bool = False) -> RunResult:
    """See ``so8t.run``."""
    from so8t.runtime import LlamaRuntime, chat_prompt

    if image and not mmproj:
        raise So8tError("--image needs --mmproj (the vision GGUF written by 'so8t export')")
    if max_tokens < 1:
        raise So8tError("--max-tokens must be at least 1")
    side = resolve_sidecar(model, sidecar)
    with LlamaRuntime(model, mmproj=mmproj, sidecar=side, n_ctx=n_ctx, n_threads=n_threads, verbose=verbose) as rt:
        if image:
            text = rt.describe_image(image, prompt, max_tokens=max_tokens)
            return RunResult(text, prompt, side, "image")
        fed = chat_prompt(prompt) if chat else prompt
        gen = rt.generate(fed, max_tokens=max_tokens)
        status = _safety_status(side)
        verdict = rt.safety(fed) if status == "verdict" else None
    return RunResult(gen.text, fed, side, status, generation=gen, safety=verdict)


def _safety_status(sidecar: Path | None) -> str:
    if sidecar is None:
        return "no-sidecar"
    from so8t.gguf.sidecar_reader import read_sidecar

    side = read_sidecar(sidecar)
    if side.safety_weights is None:
        return "no-head"
    return "verdict" if side.head_trained else "untrained"
