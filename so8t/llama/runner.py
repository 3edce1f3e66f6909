"""One prompt through ``LlamaRuntime``: greedy text behind the safety head's guard, llama.cpp's perf counters.

What ``so8t.run`` (and ``so8t run``) does. The guard: the sidecar's safety head reads the final-norm hidden
state of the prompt's last token from the same llama.cpp context and the same prefill as the generation,
before the first token is chosen (``LlamaRuntime.generate(guard=...)``). On REFUSE nothing is generated and
the refusal text is returned (``RunResult.refused``); on ESCALATE the policy decides (:data:`ESCALATE_POLICIES`:
``"answer"``, the default, answers and reports ESCALATE; ``"refuse"`` treats it as REFUSE); ALLOW answers.

The verdict comes only from a head that ``so8t train`` trained (``so8t.safety_head.trained`` in the
sidecar); otherwise the guard is not active and ``RunResult.safety_status`` says why, never a silent ALLOW:
``"no-sidecar"`` (none given or found), ``"no-head"`` (the sidecar has no safety head), ``"untrained"`` (a
head with its random init), ``"image"`` (an image prompt goes through llama.cpp's multimodal handler, whose
prefill the head cannot read: not guarded), ``"off"`` (``guard=False``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from so8t.errors import So8tError

#: ``RunResult.safety_status`` values.
SAFETY_STATUSES = ("verdict", "untrained", "no-head", "no-sidecar", "image", "off")
#: What the guard does with an ESCALATE verdict.
ESCALATE_POLICIES = ("answer", "refuse")
DEFAULT_REFUSAL = "I can't help with that request."


@dataclass
class RunResult:
    text: str
    prompt: str  # what llama.cpp was given (chat-formatted unless ``chat=False``; the question for images)
    sidecar: Path | None
    safety_status: str
    generation: object | None = None  # so8t.llama.runtime.Generation; None for an image prompt
    safety: object | None = None  # so8t.safety verdict (label, probabilities) when status is "verdict"
    refused: bool = False  # the guard stopped the request before the first token; ``text`` is the refusal


def resolve_sidecar(model: str | Path, sidecar: str | Path | None) -> Path | None:
    """``"auto"``: the exporter's sibling ``<stem>.so8t.gguf`` if present; ``"none"``/None: no sidecar."""
    from so8t.llama.runtime import default_sidecar

    if sidecar == "auto":
        return default_sidecar(model)
    if sidecar is None or sidecar == "none":
        return None
    return Path(sidecar)


def run_prompt(model, prompt: str, *, max_tokens: int = 64, chat: bool = True, image=None, mmproj=None,
               sidecar="auto", n_ctx: int = 2048, n_threads: int | None = None, verbose: bool = False,
               guard: bool = True, on_escalate: str = "answer", refusal: str = DEFAULT_REFUSAL) -> RunResult:
    """See ``so8t.run``."""
    from so8t.llama.chat import chat_prompt
    from so8t.llama.runtime import LlamaRuntime

    if image and not mmproj:
        raise So8tError("--image needs --mmproj (the vision GGUF written by 'so8t export')")
    if max_tokens < 1:
        raise So8tError("--max-tokens must be at least 1")
    if on_escalate not in ESCALATE_POLICIES:
        raise So8tError(f"--on-escalate must be one of {list(ESCALATE_POLICIES)}, got {on_escalate!r}")
    side = resolve_sidecar(model, sidecar)
    with LlamaRuntime(model, mmproj=mmproj, sidecar=side, n_ctx=n_ctx, n_threads=n_threads, verbose=verbose) as rt:
        if image:
            text = rt.describe_image(image, prompt, max_tokens=max_tokens)
            return RunResult(text, prompt, side, "image")
        fed = chat_prompt(prompt) if chat else prompt
        status = safety_status(side) if guard else "off"
        seen: dict = {}
        gen = rt.generate(fed, max_tokens=max_tokens, guard=head_guard(rt, on_escalate, seen) if status == "verdict"
                          else None)
    text = refusal if gen.guarded else gen.text
    return RunResult(text, fed, side, status, generation=gen, safety=seen.get("verdict"), refused=gen.guarded)


def head_guard(runtime, on_escalate: str, seen: dict):
    """The guard callable for ``LlamaRuntime.generate``/``stream``: the sidecar's head on the hidden state,
    its verdict kept in ``seen["verdict"]``; False (stop) when :func:`blocks` says so."""
    import numpy as np

    def allows(hidden) -> bool:
        seen["verdict"] = verdict = runtime.safety_head().verdict(np.asarray(hidden, dtype=np.float64))
        return not blocks(verdict.label, on_escalate)

    return allows


def blocks(label: str, on_escalate: str) -> bool:
    """Whether the guard stops a request with verdict ``label`` under the ESCALATE policy."""
    return label == "REFUSE" or (label == "ESCALATE" and on_escalate == "refuse")


def safety_status(sidecar: Path | None) -> str:
    if sidecar is None:
        return "no-sidecar"
    from so8t.gguf.sidecar_reader import read_sidecar

    side = read_sidecar(sidecar)
    if side.safety_weights is None:
        return "no-head"
    return "verdict" if side.head_trained else "untrained"
