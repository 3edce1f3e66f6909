"""``so8t analyze``: print the model analysis of a Qwen2-VL (or SO8T) checkpoint."""

from __future__ import annotations

import json

from so8t.cli.common import add_command


def register(sub) -> None:
    p = add_command(
        sub,
        "analyze",
        "show architecture, sizes and parameter counts of a checkpoint",
        "Read config.json and the safetensors headers (no weights are loaded) and print the model "
        "analysis: architecture, hidden/intermediate size, layers, heads, KV heads, vocab, positions, "
        "vision tower, parameter counts, dtype and file sizes.",
    )
    p.add_argument("--input-model", "-i", required=True, metavar="DIR", help="checkpoint directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from so8t.analyze import analyze_checkpoint, format_analysis

    result = analyze_checkpoint(args.input_model)
    print(json.dumps(result, indent=2) if args.json else format_analysis(result))
    return 0
