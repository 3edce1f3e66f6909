"""Does a middle layer help the guard once the gates train with the head? A study on the real-weights model.

``benchmarks/study_guard_features.py`` found, on frozen features with full-batch heads chosen on the eval
split, one feature set near the guard's targets: decoder layer 12's output averaged over the user's content
tokens. Reading it at run time would need a llama.cpp graph callback on every prefill, so this asks first
whether it holds up when trained the way ``so8t train`` trains (mini-batches of 8, Adam, lr 3e-3, the shipped
``Linear-GELU-Linear`` head, SO8T's class weights 1/3/5, 60 steps), with the gates of the layers below the
read point trained with the head or frozen. Per run: held-out REFUSE recall and over-refusal (safe prompts
flagged ESCALATE or REFUSE) by the head's argmax, no calibration.

    python benchmarks/study_guard_gates.py --model SO8T_DIR --layer 12 --pool user --seed 0
    python benchmarks/study_guard_gates.py --model SO8T_DIR --pool final-last --standardise

``SO8T_DIR``: ``so8t convert --input-model "$(python -m so8t.testing.real_weights)" --safety-features``.
``--layer N`` runs only decoder layers 0..N-1 (nothing above the read point matters to the head), so a
step costs about half of ``so8t train``'s. A study, not a benchmark: nothing here runs in a gate. Results:
docs/benchmarks.md (the guard).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's so8t, not an installed one
sys.path.insert(0, str(ROOT / "benchmarks"))

from study_guard_features import SPLITS, rates, render


def main() -> None:
    import torch
    import torch.nn.functional as F

    from so8t.adapters import qwen2vl
    from so8t.model import SO8TModel
    from so8t.safety import SafetyHead
    from so8t.training.data import load_tokenizer
    from so8t.training.losses import class_weights

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="SO8T checkpoint directory (identity gates, safety head)")
    p.add_argument("--layer", type=int, default=None, help="read decoder layer N's output (default: final norm)")
    p.add_argument("--pool", choices=("user", "last", "final-last"), default="user",
                   help="user: mean over the user's content tokens; last / final-last: the last prompt token")
    p.add_argument("--frozen-gates", action="store_true", help="train the head alone")
    p.add_argument("--standardise", action="store_true",
                   help="standardise the features on the training split first (an affine map the head's first "
                        "Linear could absorb)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if (args.layer is None) != (args.pool == "final-last"):
        p.error("--pool final-last reads the final norm and takes no --layer; user and last need --layer")

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as so8t train (so8t/training/loop.py, Note [denormals])
    tok = load_tokenizer(args.model)
    data = {split: render(tok, split) for split in SPLITS}
    model = SO8TModel.from_dir(args.model)
    text = model.qwen.model.language_model
    keep = args.layer or len(qwen2vl.decoder_layers(model.qwen))
    text.layers = text.layers[:keep]
    seen = {}
    def keep_output(module, args, output):
        seen["h"] = output[0] if isinstance(output, tuple) else output

    text.layers[keep - 1].register_forward_hook(keep_output)
    for param in model.parameters():
        param.requires_grad_(False)
    params = [] if args.frozen_gates else [q for g in model.gates[:keep] for q in g.parameters()]
    for param in params:
        param.requires_grad_(True)
    head = SafetyHead(int(model.qwen.config.text_config.hidden_size), seed=args.seed)

    def features(batch):
        n = max(len(b[0]) for b in batch)
        ids = torch.tensor([b[0] + [0] * (n - len(b[0])) for b in batch])
        mask = torch.tensor([[1] * len(b[0]) + [0] * (n - len(b[0])) for b in batch])
        model.qwen.model.rope_deltas = None
        with model.cached_rotations():
            out = text(input_ids=ids, attention_mask=mask, use_cache=False)
        h = out.last_hidden_state if args.pool == "final-last" else seen["h"]
        if args.pool == "user":
            return torch.stack([h[i, b[1] : b[1] + b[2]].mean(0) for i, b in enumerate(batch)])
        return torch.stack([h[i, len(b[0]) - 1] for i, b in enumerate(batch)])

    def all_features(split):
        return torch.cat([features(data[split][i : i + 8]) for i in range(0, len(data[split]), 8)])

    mu, sd = 0.0, 1.0
    if args.standardise:
        with torch.no_grad():
            f0 = all_features("train")
        mu, sd = f0.mean(0), f0.std(0) + 1e-6
    opt = torch.optim.AdamW(params + list(head.parameters()), lr=3e-3, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
    gen = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    for step in range(args.steps):
        batch = [data["train"][i] for i in torch.randint(len(data["train"]), (8,), generator=gen).tolist()]
        y = torch.tensor([b[3] for b in batch])
        loss = F.cross_entropy(head((features(batch) - mu) / sd), y, weight=class_weights())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        print(f"step {step + 1}/{args.steps} loss {loss.item():.3f}", file=sys.stderr)
    result = {"args": vars(args), "seconds": round(time.perf_counter() - started, 1)}
    with torch.no_grad():
        for split in ("eval", "heldout"):
            pred = head((all_features(split) - mu) / sd).argmax(-1)
            recall, over = rates(pred, torch.tensor([b[3] for b in data[split]]))
            result[split] = {"refuse_recall": round(recall, 3), "over_refusal": round(over, 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
