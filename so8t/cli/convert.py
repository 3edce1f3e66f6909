"""``so8t convert``: Qwen2-VL checkpoint -> SO8T checkpoint directory."""

from __future__ import annotations

import sys

from so8t.cli.common import add_command


def register(sub) -> None:
    p = add_command(
        sub,
        "convert",
        "convert a Qwen2-VL checkpoint into an SO8T checkpoint (SO(8) gates on every residual write)",
    )
    p.add_argument(
        "--input-model", required=True, metavar="DIR", help="Hugging Face Qwen2-VL checkpoint directory"
    )
    p.add_argument("--output-model", required=True, metavar="DIR", help="SO8T checkpoint directory to write")
    p.add_argument(
        "--hidden-size",
        type=int,
        default=None,
        help="expected text hidden size (checked against config.json)",
    )
    p.add_argument("--rotation-dim", type=int, default=8, help="rotation block size; SO8T requires 8")
    p.add_argument("--safety-features", action="store_true", help="add the ALLOW/ESCALATE/REFUSE safety head")
    p.add_argument(
        "--rotation-init",
        choices=("identity", "random"),
        default="identity",
        help="identity: the converted model computes exactly what the source computes",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed for random gates and the safety head (default 0)"
    )
    p.add_argument("--map", choices=("exp", "cayley"), default="exp", help="generator -> rotation map")
    p.add_argument(
        "--link-weights",
        action="store_true",
        help="hard-link the source's weight files instead of copying them: no extra disk, no copy time (a "
        "copy where the output is on another filesystem); both names are then one file, so editing either "
        "in place changes both",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=handle)


def handle(args) -> int:
    import time

    import so8t

    start = time.perf_counter()
    done = so8t.convert(
        args.input_model,
        args.output_model,
        hidden_size=args.hidden_size,
        rotation_dim=args.rotation_dim,
        safety_features=args.safety_features,
        rotation_init=args.rotation_init,
        seed=args.seed,
        map=args.map,
        link_weights=args.link_weights,
        progress=not args.no_progress,
    )
    print(
        f"wrote {done.path} ({done.num_layers} layers x {done.gates_per_layer} gates, "
        f"hidden {done.hidden_size}, init {done.rotation_init}, map {done.map}"
        f"{', safety head' if done.safety_head else ''}) in {time.perf_counter() - start:.1f} s",
        file=sys.stdout,
    )
    return 0
