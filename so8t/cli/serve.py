"""``so8t serve``: an OpenAI-compatible server (chat completions, streaming, models) over llama.cpp, behind
the SO8T safety head's guard (so8t/llama/serve.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from so8t.cli.common import add_command, add_guard_options


def register(sub) -> None:
    p = add_command(sub, "serve", "OpenAI-compatible server over llama.cpp behind the safety head's guard",
                    description="Serve /v1/models and /v1/chat/completions (streaming too). A trained safety "
                    "head decides before the first token; a refused request returns finish_reason "
                    "'content_filter' and no generated token; every response has an 'so8t' field with the "
                    "verdict. Binds 127.0.0.1 unless --host says otherwise.")
    p.add_argument("--model", required=True, help="text GGUF written by 'so8t export'")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8080, help="port to bind")
    p.add_argument("--model-name", default=None, help="the model id clients ask for (default: the file's stem)")
    p.add_argument("--mmproj", default=None, help="mmproj GGUF: serves messages with image parts (unguarded)")
    add_guard_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from so8t.llama.runner import DEFAULT_REFUSAL
    from so8t.llama.serve import ServeConfig, serve

    config = ServeConfig(Path(args.model), sidecar=args.sidecar, mmproj=Path(args.mmproj) if args.mmproj else None,
                         n_ctx=args.ctx, n_threads=args.threads, model_name=args.model_name, guard=not args.no_guard,
                         on_escalate=args.on_escalate, refusal=args.refusal_text or DEFAULT_REFUSAL)
    print(f"so8t serve: http://{args.host}:{args.port}/v1 ({config.model_name or config.model.stem})", file=sys.stderr)
    serve(config, host=args.host, port=args.port)
    return 0
