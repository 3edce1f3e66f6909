"""``so8t train``: learn the SO(8) gates and the safety head (with PET) on a frozen Qwen2-VL."""

from __future__ import annotations

import shlex
import sys

from so8t.cli.common import add_command

EPILOG_DISTRIBUTED = (
    "Data parallel: torchrun --nproc-per-node N -m so8t.cli train ... (gloo on CPU, nccl with --device cuda); "
    "--batch-size is the global batch."
)


def register(sub) -> None:
    from so8t.training import defaults as d
    from so8t.training.defaults import DEFAULT_WEIGHTS
    p = add_command(
        sub,
        "train",
        "train the SO(8) gates and the safety head (LM + class-weighted safety + PET) on a frozen base",
        "Trainable: every gate's generators and the safety head; every Qwen2-VL weight stays frozen. "
        "Writes an SO8T checkpoint like 'so8t convert' does. " + EPILOG_DISTRIBUTED,
    )
    p.add_argument("--so8t-model", required=True, metavar="DIR", help="SO8T checkpoint (from 'so8t convert')")
    p.add_argument("--train-data", required=True, metavar="F.jsonl", help="training data (messages or text)")
    p.add_argument("--eval-data", metavar="F.jsonl", help="evaluation data (metrics at --eval-every and the end)")
    p.add_argument("--safety-calibration-data", metavar="F.jsonl",
                   help="labelled prompts (not the training or eval data) on which the safety head's operating "
                   "point is chosen after training and folded into the head: the least over-refusal plus "
                   "over-compliance with REFUSE recall >= --min-refuse-recall (docs/reference.md section 15)")
    p.add_argument("--min-refuse-recall", type=float, default=d.MIN_REFUSE_RECALL, metavar="R",
                   help="the calibration's floor on REFUSE recall (default %(default)s)")
    p.add_argument("--output-model", required=True, metavar="DIR", help="trained SO8T checkpoint to write")
    p.add_argument("--steps", type=int, default=d.STEPS, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=d.BATCH_SIZE, help="global batch (examples per step)")
    p.add_argument("--lr", type=float, default=d.LR, help="peak Adam learning rate")
    p.add_argument("--seed", type=int, default=d.SEED, help="data order (and head init if none)")
    p.add_argument("--lm-weight", type=float, default=DEFAULT_WEIGHTS["lm"],
                   help="weight of the next-token loss on assistant tokens (the model's own objective)")
    p.add_argument("--safety-weight", type=float, default=DEFAULT_WEIGHTS["safety"],
                   help="weight of the class-weighted (ALLOW 1, ESCALATE 3, REFUSE 5) safety cross-entropy")
    p.add_argument("--pet-weight", type=float, default=DEFAULT_WEIGHTS["pet"],
                   help="weight of PET (x0.01/x0.1/x1.0 phases); small because PET is of order the hidden size")
    p.add_argument("--eval-every", type=int, default=d.EVAL_EVERY, help="evaluate every K steps (0: at the end)")
    p.add_argument("--save-every", type=int, default=d.SAVE_EVERY,
                   help="write the training state every K steps (and always at the end)")
    p.add_argument("--resume", action="store_true", help="continue from <output>.train/state.pt")
    p.add_argument("--compute-dtype", choices=("auto", "float32", "bfloat16", "float64"), default=d.COMPUTE_DTYPE,
                   help="dtype of the forward/backward pass (auto: bfloat16 on CUDA, float32 on the CPU)")
    p.add_argument("--device", default=d.DEVICE,
                   help="auto (CUDA when torch sees a GPU, else cpu), cpu, cuda or cuda:N (one GPU per rank "
                   "under torchrun)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=handle)


def resume_command(argv: list[str]) -> str:
    args = list(argv) + ([] if "--resume" in argv else ["--resume"])
    return "so8t " + shlex.join(args)


def handle(args) -> int:
    import so8t
    from so8t.training import TrainInterrupted
    from so8t.training.metrics import format_metrics

    try:
        result = so8t.train(
            args.so8t_model, args.train_data, args.output_model,
            eval_data=args.eval_data or None, safety_calibration_data=args.safety_calibration_data or None,
            min_refuse_recall=args.min_refuse_recall, steps=args.steps,
            batch_size=args.batch_size, lr=args.lr, seed=args.seed, lm_weight=args.lm_weight,
            safety_weight=args.safety_weight, pet_weight=args.pet_weight, eval_every=args.eval_every,
            save_every=args.save_every, resume=args.resume, compute_dtype=args.compute_dtype,
            device=args.device, progress=not args.no_progress, threads=args.threads,
        )
    except TrainInterrupted as stop:
        where = "no checkpoint yet" if stop.last_step is None else f"step {stop.last_step} in {stop.state_dir}"
        print(f"so8t train: interrupted; last complete checkpoint: {where}", file=sys.stderr)
        if stop.last_step is not None:
            print(f"resume with: {resume_command(args.argv)}", file=sys.stderr)
        return 130
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        rate = result.tokens / result.step_seconds if result.step_seconds > 0 else 0.0
        head = "safety head trained" if result.head_trained else "safety head untrained"
        print(f"wrote {result.output} ({result.steps} steps in {result.step_seconds:.1f} s, {rate:.0f} tokens/s; "
              f"{result.seconds:.1f} s with loading and writing; {head})")
        if result.metrics:
            print(format_metrics(result.metrics))
    return 0
