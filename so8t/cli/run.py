"""``so8t run``: run an exported text GGUF with llama.cpp (greedy), optionally with an image and the
SO8T safety head from the sidecar."""

from __future__ import annotations

import sys

from so8t.cli.common import add_command


def register(sub) -> None:
    p = add_command(sub, "run", "run an exported GGUF with llama.cpp (greedy generation, tokens/s, safety)")
    p.add_argument("--model", required=True, help="text GGUF written by 'so8t export'")
    p.add_argument("--prompt", required=True, help="user message (wrapped in the Qwen2-VL chat format)")
    p.add_argument("--raw", action="store_true", help="send --prompt as is, without the chat format")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens to generate")
    p.add_argument("--mmproj", default=None, help="mmproj GGUF (needed for --image)")
    p.add_argument("--image", default=None, help="image file to ask about (needs --mmproj)")
    p.add_argument(
        "--sidecar",
        default="auto",
        help="SO8T sidecar GGUF for the safety verdict ('auto': <model stem>.so8t.gguf if present; 'none')",
    )
    p.add_argument("--ctx", type=int, default=2048, help="context length")
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores, max 8)")
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
    )
    print(result.text)
    if result.generation is not None:
        gen = result.generation
        print(
            f"[{gen.prompt_tokens} prompt tokens at {gen.prompt_tokens_per_s:.1f} tok/s, "
            f"{len(gen.tokens)} generated at {gen.gen_tokens_per_s:.1f} tok/s (llama.cpp perf counters)]",
            file=sys.stderr,
        )
    _print_safety(result)
    return 0


def _print_safety(result) -> None:
    """A verdict only from a head ``so8t train`` trained; otherwise say why there is none."""
    if result.safety_status == "no-head":
        print("safety: (the sidecar has no safety head)", file=sys.stderr)
    elif result.safety_status == "untrained":
        print("safety: safety head untrained (no verdict; train it with 'so8t train')")
    elif result.safety_status == "verdict":
        probs = " ".join(f"{k}={v:.3f}" for k, v in result.safety.probabilities.items())
        print(f"safety: {result.safety.label} ({probs})")
