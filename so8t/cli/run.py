"""``so8t run``: run an exported text GGUF with llama.cpp (greedy) behind the SO8T safety head's guard,
optionally with an image.

Exit status: 0 answered, 4 refused by the guard (nothing was generated), 2 usage or input error."""

from __future__ import annotations

import sys

from so8t.cli.common import add_command, add_guard_options


def register(sub) -> None:
    p = add_command(sub, "run", "run an exported GGUF with llama.cpp (greedy generation, tokens/s, safety)")
    p.add_argument("--model", required=True, help="text GGUF written by 'so8t export'")
    p.add_argument("--prompt", required=True, help="user message (wrapped in the Qwen2-VL chat format)")
    p.add_argument("--raw", action="store_true", help="send --prompt as is, without the chat format")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens to generate")
    p.add_argument("--mmproj", default=None, help="mmproj GGUF (needed for --image)")
    p.add_argument("--image", default=None, help="image file to ask about (needs --mmproj)")
    add_guard_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import so8t

    result = so8t.run(
        args.model,
        args.prompt,
        max_tokens=args.max_tokens,
        chat=not args.raw,
        image=args.image,
        mmproj=args.mmproj,
        sidecar=args.sidecar,
        n_ctx=args.ctx,
        n_threads=args.threads,
        verbose=args.verbose,
        guard=not args.no_guard,
        on_escalate=args.on_escalate,
        refusal=args.refusal_text,
    )
    print(result.text)
    if result.generation is not None and not result.refused:
        gen = result.generation
        print(
            f"[{gen.prompt_tokens} prompt tokens at {gen.prompt_tokens_per_s:.1f} tok/s, "
            f"{len(gen.tokens)} generated at {gen.gen_tokens_per_s:.1f} tok/s (llama.cpp perf counters)]",
            file=sys.stderr,
        )
    _print_safety(result)
    return REFUSED if result.refused else 0


#: Exit status of a request the guard refused.
REFUSED = 4


def _print_safety(result) -> None:
    """A verdict only from a head ``so8t train`` trained; otherwise say why there is none."""
    not_active = {
        "no-head": "guard not active: the sidecar has no safety head",
        "no-sidecar": "guard not active: no sidecar (--sidecar; the exporter writes <stem>.so8t.gguf)",
        "untrained": "guard not active: safety head untrained (no verdict; train it with 'so8t train')",
        "image": "guard not active: image prompts are not guarded (llama.cpp's multimodal prefill)",
        "off": "guard off (--no-guard): no safety verdict",
    }
    if result.safety_status in not_active:
        print(f"safety: {not_active[result.safety_status]}", file=sys.stderr)
    elif result.safety_status == "verdict":
        probs = " ".join(f"{k}={v:.3f}" for k, v in result.safety.probabilities.items())
        action = "refused before the first token" if result.refused else "answered"
        print(f"safety: {result.safety.label} ({probs}); {action}")
