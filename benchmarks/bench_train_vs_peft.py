"""``so8t train`` step vs Hugging Face PEFT's OFT (block size 8 on the same modules), one process each.

Both sides: the same frozen Qwen2-VL (loaded in the compute dtype), the same batches of the demo set
(``so8t.training.batching``), the same objective (LM + class-weighted safety + PET through
``so8t.training.losses``, the safety head trainable on both sides), Adam with the same lr, the same torch
threads, denormals flushed on both sides (Note [denormals] in ``so8t.training.loop``). What differs is the
adapter: ours = SO(8) gates (exp map, 4 gates per layer, output side of o_proj/down_proj, through
``so8t.training.loop.train_step``); PEFT = ``OFTConfig(oft_block_size=8, r=0, target_modules=["o_proj",
"down_proj"])`` (Cayley-Neumann, input side of the same Linears).

Usage (``pip install -e .[bench]`` for peft)::

    python benchmarks/bench_train_vs_peft.py --source DIR --so8t DIR --steps 5 --batch-size 4 --threads 2 \\
        --out results.json

runs each side in its own child process (``--impl so8t|peft`` is the child mode) so peak RSS is that
side's alone, and prints / writes time per step (median of the timed steps after one warm-up; wall clock
and process CPU time, the latter robust to other jobs on a shared machine when ``--threads 1``), peak RSS
(whole process, and from the first step on), training tokens/s, and the ratios ours / PEFT.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's so8t, not an installed one


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_hwm() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def so8t_stepper(args):
    from so8t.data import DEMO_TRAIN
    from so8t.training import TrainOptions
    from so8t.training.distributed import World
    from so8t.training.loop import read_records, train_step
    from so8t.training.session import open_session

    options = TrainOptions(Path(args.so8t), DEMO_TRAIN, Path("/nonexistent-out"), steps=args.steps + 1,
                           batch_size=args.batch_size, lr=args.lr, compute_dtype=args.dtype,
                           device=args.device).resolved()
    options.check = lambda: None  # the output is never written here
    session = open_session(options, World(device=options.device))
    # read back every step: a timed step must have finished (the training loop reads every 10 on CUDA)
    return lambda step: read_records([train_step(session, step)], options.lm_weight)[0]["tokens"]


def peft_stepper(args):
    import torch
    from peft import OFTConfig, get_peft_model

    from so8t.data import DEMO_TRAIN
    from so8t.model import load_plain_qwen2vl
    from so8t.safety import SafetyHead
    from so8t.training.batching import collate, global_batch_indices
    from so8t.training.data import load_dataset, load_tokenizer
    from so8t.training.losses import combine, loss_sums
    from so8t.training.session import COMPUTE_DTYPES, DEFAULT_WEIGHTS, lr_factor

    dtype = COMPUTE_DTYPES[args.dtype]
    tok = load_tokenizer(args.source)
    data = load_dataset(DEMO_TRAIN, tok, 32768)
    qwen = load_plain_qwen2vl(args.source, dtype=dtype)
    qwen.requires_grad_(False)
    config = OFTConfig(oft_block_size=8, r=0, target_modules=["o_proj", "down_proj"], module_dropout=0.0)
    peft_model = get_peft_model(qwen, config)

    class Shim(torch.nn.Module):  # what so8t.training.losses reads: .qwen and .safety_head
        def __init__(self):
            super().__init__()
            self.qwen = peft_model.base_model.model
            self.safety_head = SafetyHead(int(qwen.config.text_config.hidden_size), seed=0)

    model = Shim().eval().to(args.device)
    params = [p for p in model.parameters() if p.requires_grad]
    n_oft = sum(1 for n, p in model.named_parameters() if p.requires_grad and "oft_" in n)
    assert n_oft == 2 * qwen.config.text_config.num_hidden_layers, n_oft
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps + 1))
    pad = tok.pad_token_id or 0

    def step(s: int) -> int:
        batch = collate([data.examples[i] for i in global_batch_indices(len(data), args.batch_size, 0, s)], pad)
        batch = batch.to(args.device)
        out = loss_sums(model, batch)
        total, _ = combine(out.sums, out.counts, DEFAULT_WEIGHTS, s, args.steps + 1)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        sched.step()
        return int(batch.attention_mask.sum())  # a read back: the step has finished on any device

    return step


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    start = time.perf_counter()
    step = (so8t_stepper if args.impl == "so8t" else peft_stepper)(args)
    load_s = time.perf_counter() - start
    load_hwm = vm_hwm_mb()
    reset_hwm()
    times, cpu, tokens = [], [], []
    for s in range(args.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        n = step(s)
        if s:  # step 0 is the warm-up
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            tokens.append(n)
    gpu = {}
    if args.device.startswith("cuda"):
        gpu = {"peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30}
    result = {"impl": args.impl, "load_s": load_s, "step_s": statistics.median(times), "step_times": times, **gpu,
              "cpu_step_s": statistics.median(cpu),
              "tokens_per_step": statistics.mean(tokens), "tokens_per_s": sum(tokens) / sum(times),
              "peak_rss_mb": max(load_hwm, vm_hwm_mb()), "train_peak_rss_mb": vm_hwm_mb()}
    print("RESULT " + json.dumps(result))


def run_child(impl: str) -> dict:
    cmd = [sys.executable, __file__, "--impl", impl, *sys.argv[1:]]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{impl} run failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def parent(args) -> dict:
    """Rounds alternate PEFT, ours, PEFT, ours... (a machine that slows down hits both); per side the round
    with the smallest median step time counts (other load only ever adds time)."""
    rounds: dict[str, list[dict]] = {"peft": [], "so8t": []}
    for _ in range(args.rounds):
        for impl in ("peft", "so8t"):
            rounds[impl].append(run_child(impl))
    results = {impl: min(runs, key=lambda r: r["step_s"]) for impl, runs in rounds.items()}
    for impl, runs in rounds.items():
        results[impl]["round_step_s"] = [r["step_s"] for r in runs]
    ours, theirs = results["so8t"], results["peft"]
    summary = {
        "config": {k: getattr(args, k) for k in ("source", "steps", "batch_size", "threads", "dtype", "device", "lr",
                                                 "rounds")},
        "results": results,
        "ratio_step_time": ours["step_s"] / theirs["step_s"],
        "ratio_cpu_step_time": ours["cpu_step_s"] / theirs["cpu_step_s"],
        "ratio_peak_rss": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
        "ratio_train_peak_rss": ours["train_peak_rss_mb"] / theirs["train_peak_rss_mb"],
        "so8t_tokens_per_s": ours["tokens_per_s"],
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", required=True, help="plain Qwen2-VL checkpoint (PEFT side)")
    p.add_argument("--so8t", required=True, help="its SO8T conversion, identity gates + safety head (our side)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--device", default="cpu", help="cpu or cuda (peak GPU memory is reported on CUDA)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per side (best median counts)")
    p.add_argument("--out", default=None, help="write the summary JSON here")
    p.add_argument("--impl", choices=("so8t", "peft"), default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.impl:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
