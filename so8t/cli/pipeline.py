"""``so8t pipeline``: the whole job in one command (check, convert, export, validate, summary)."""

from __future__ import annotations

import sys
from pathlib import Path

from so8t.cli.common import add_command

DEMO_OUTPUT = Path("so8t-demo")


def register(sub) -> None:
    p = add_command(
        sub,
        "pipeline",
        "check, convert, export and validate in one go, then print a summary table",
        "Environment check (library versions, free disk against the estimated need), input check, "
        "Qwen2-VL -> SO8T conversion, GGUF export of every requested quant type (text + mmproj + SO8T "
        "sidecar), validation of every text file against PyTorch, and a summary table. "
        "Use --demo to run it on the embedded default model (built locally, no downloads).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input-model", metavar="DIR", help="Qwen2-VL checkpoint directory (safetensors)")
    src.add_argument(
        "--demo",
        action="store_true",
        help=f"use the embedded default model, random gates, train on the demo safety set, output ./{DEMO_OUTPUT} "
        "(replaced if present)",
    )
    p.add_argument("--output-dir", metavar="DIR", help="where everything goes (default ./so8t-out)")
    p.add_argument(
        "--quantization",
        action="append",
        metavar="TYPE[,TYPE...]",
        help="quant types, repeatable or comma separated (default F16,Q8_0,Q4_K_M; Q8_K is not a file type)",
    )
    p.add_argument("--model-name", help="file stem and general.name (default: the input directory name)")
    p.add_argument("--rotation-init", choices=["identity", "random"], help="gate init (default identity; "
                   "random with --demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of random gates and the safety head")
    p.add_argument("--no-safety-features", dest="safety_features", action="store_false",
                   help="do not add the safety head")
    p.add_argument("--no-validate", dest="validate", action="store_false", help="skip validation")
    p.add_argument("--overwrite", action="store_true", help="replace a previous pipeline output directory")
    p.add_argument("--train-data", metavar="F.jsonl",
                   help="run 'so8t train' after convert (with --demo: the shipped demo safety set)")
    p.add_argument("--eval-data", metavar="F.jsonl", help="evaluation data for the train step")
    p.add_argument("--safety-calibration-data", metavar="F.jsonl",
                   help="labelled prompts on which the train step places the safety head's operating point "
                   "(see 'so8t train --help')")
    p.add_argument("--train-steps", type=int, default=150, help="optimisation steps of the train step")
    p.add_argument("--train-batch-size", type=int, default=16, help="global batch size of the train step")
    p.add_argument("--notify", action="store_true", help="signal completion (desktop notification or bell)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    import so8t
    from so8t.pipeline.notify import notify
    from so8t.pipeline.run import DEFAULT_QUANT_TYPES
    from so8t.pipeline.summary import format_summary

    if args.demo:
        from so8t.testing import default_checkpoint

        input_model = default_checkpoint("tied")
        output_dir = Path(args.output_dir) if args.output_dir else DEMO_OUTPUT
        rotation_init = args.rotation_init or "random"
        name = args.model_name or "so8t-demo"
        from so8t.data import DEMO_EVAL, DEMO_TRAIN

        train_data = Path(args.train_data) if args.train_data else DEMO_TRAIN
        eval_data = Path(args.eval_data) if args.eval_data else (None if args.train_data else DEMO_EVAL)
    else:
        input_model = Path(args.input_model)
        output_dir = Path(args.output_dir or "so8t-out")
        rotation_init = args.rotation_init or "identity"
        name = args.model_name
        train_data = Path(args.train_data) if args.train_data else None
        eval_data = Path(args.eval_data) if args.eval_data else None
    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr))
    try:
        result = so8t.run_pipeline(
            input_model,
            output_dir,
            log=log,
            quant_types=args.quantization or list(DEFAULT_QUANT_TYPES),
            model_name=name,
            rotation_init=rotation_init,
            seed=args.seed,
            safety_features=args.safety_features,
            validate=args.validate,
            overwrite=args.overwrite or args.demo,
            progress=not args.quiet,
            train_data=train_data,
            eval_data=eval_data,
            safety_calibration_data=Path(args.safety_calibration_data) if args.safety_calibration_data else None,
            train_steps=args.train_steps,
            train_batch_size=args.train_batch_size,
        )
    finally:
        if args.notify:
            notify("so8t pipeline", "finished")
    print(format_summary(result))
    return 0 if result.ok else 1
