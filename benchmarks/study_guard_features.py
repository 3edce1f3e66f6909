"""Which hidden-state features separate the guard's classes? A study on a frozen, ungated Qwen2-VL.

For every prompt of ``so8t/data/guard_safety_{train,eval,heldout}.jsonl``, rendered as ``so8t train``
renders it (chat template with the generation prompt), one float32 forward pass of the plain model gives:

* ``last``: the final-norm hidden state of the last token (what the shipped guard reads);
* ``mean``: the final-norm hidden states averaged over every prompt token;
* ``user``: the same averaged over the user's content tokens only;
* ``lN`` / ``mN``: the output of decoder layer N at the last token / averaged over the content tokens
  (``--layers``: 8, 12, 16, 20 unless told; ``all`` is every layer before the final norm);
* with ``--suffix TEXT`` (a probe: the text is appended to every rendered prompt, so the features are read
  after it): also ``judge``, the LM head's logit of ``Yes`` minus ``No`` and of ``yes`` minus ``no`` at
  the last token, the model's own zero-shot answer when the suffix asks it a yes/no question.
* with ``--system TEXT``, every prompt is rendered after a system turn of that text (an instruction the
  features are read under; the template's default system turn otherwise).

Each feature set (standardised on the training split) gets heads of two shapes (linear; the shipped
``Linear-GELU-Linear``, ``mlp``; ``--heads`` keeps one) over a small grid of weight decay and full-batch
AdamW steps, SO8T's class weights (1, 3, 5). The head with the least eval over-refusal minus REFUSE
recall is chosen on the eval split; its held-out figures are reported, and how many heads of the grid would
meet the guard's held-out targets (REFUSE recall >= 0.9, over-refusal <= 0.1): an oracle count, not a
method.

    python benchmarks/study_guard_features.py --model "$(python -m so8t.testing.real_weights)" --out s.json
    python benchmarks/study_guard_features.py --model ... --layers all --heads linear
    python benchmarks/study_guard_features.py --model ... --layers 12 --suffix "$(printf '<|im_end|>\\n...')"
    python benchmarks/study_guard_features.py --model ... --layers 8,10,12,14,16,18,20,22 --heads mlp \
        --features '^m[0-9]+$' --cv 5

``--cv K`` chooses the feature set and the head without the held-out split: K-fold cross-validation on the
train and eval splits pooled (REFUSE recall and over-refusal summed over the folds, the largest recall minus
over-refusal wins), then the chosen head is fitted on train+eval, and on train alone, and judged on held-out.

A study, not a benchmark: nothing here runs in a gate. Results: docs/benchmarks.md (the guard).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's so8t, not an installed one

SPLITS = ("train", "eval", "heldout")
LAYERS = (8, 12, 16, 20)
SHAPES = ("linear", "mlp")
WEIGHT_DECAYS = (0.01, 0.1, 1.0)
STEPS = (100, 300)


def render(tok, split: str, suffix: str = "", system: str = "") -> list[tuple[list[int], int, int, int]]:
    """Per row of a split: the token ids as ``so8t train`` renders them (chat template with the generation
    prompt, then ``suffix``; with ``system``, a system turn of that text first), where the user's content
    starts and how many tokens it has, and the class index."""
    from so8t.safety import SAFETY_CLASSES

    rows = []
    for line in (ROOT / f"so8t/data/guard_safety_{split}.jsonl").read_text().splitlines():
        row = json.loads(line)
        messages = ([{"role": "system", "content": system}] if system else []) + row["messages"]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + suffix
        ids = tok(text).input_ids
        content = tok(row["messages"][-1]["content"]).input_ids
        n = len(content)
        at = next(i for i in range(len(ids) - n + 1) if ids[i : i + n] == content)
        rows.append((ids, at, n, SAFETY_CLASSES.index(row["label"])))
    return rows


def extract(model_dir: str, threads: int, layers: str = "8,12,16,20", suffix: str = "", system: str = "") -> dict:
    import torch

    from so8t.model import load_plain_qwen2vl
    from so8t.training.data import load_tokenizer

    torch.set_num_threads(threads)
    tok = load_tokenizer(model_dir)
    model = load_plain_qwen2vl(model_dir, dtype=torch.float32).eval()
    depth = model.config.text_config.num_hidden_layers
    wanted = range(1, depth) if layers == "all" else [int(n) for n in layers.split(",")]
    layers = [n for n in wanted if n < depth]
    judge = [tok(word).input_ids[0] for word in ("Yes", "No", "yes", "no")]
    out = {}
    for split in SPLITS:
        rows = render(tok, split, suffix, system)
        feats: dict[str, list] = {}
        started = time.perf_counter()
        for seq, at, n, _ in rows:
            with torch.no_grad():
                o = model.model(input_ids=torch.tensor([seq]), output_hidden_states=True, use_cache=False)
            final = o.last_hidden_state[0]
            row_feats = {"last": final[-1], "mean": final.mean(0), "user": final[at : at + n].mean(0)}
            if suffix:
                with torch.no_grad():
                    yes, no, yes_lower, no_lower = model.lm_head(final[-1])[judge]
                row_feats["judge"] = torch.stack([yes - no, yes_lower - no_lower])
            for layer in layers:
                row_feats[f"l{layer}"] = o.hidden_states[layer][0, -1]
                row_feats[f"m{layer}"] = o.hidden_states[layer][0, at : at + n].mean(0)
            for key, value in row_feats.items():
                feats.setdefault(key, []).append(value)
        out[split] = {"y": torch.tensor([label for *_, label in rows]),
                      **{k: torch.stack(v) for k, v in feats.items()}}
        print(f"{split}: {len(rows)} prompts in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return out


def rates(pred, y) -> tuple[float, float]:
    """(REFUSE recall, over-refusal: safe prompts flagged ESCALATE or REFUSE), as Python floats of the integer
    counts: a float32 mean makes 4 of 40 0.10000000149, which the target ``<= 0.1`` would count as missed."""
    return int((pred[y == 2] == 2).sum()) / int((y == 2).sum()), int((pred[y == 0] != 0).sum()) / int((y == 0).sum())


def pooled(data: dict, key: str) -> dict:
    """The train and eval splits as one: labels ``y`` and the feature set ``key``."""
    import torch

    return {name: torch.cat([data["train"][name], data["eval"][name]]) for name in ("y", key)}


def cross_validated(data: dict, key: str, config: tuple, k: int) -> tuple[float, float]:
    """(REFUSE recall, over-refusal) of ``config`` over ``k`` folds of the train and eval splits pooled (one
    fixed permutation), each fold judged by a head fitted on the other folds."""
    import torch

    both = pooled(data, key)
    x, y = both[key], both["y"]
    folds = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).chunk(k)
    predicted = []
    for i, held in enumerate(folds):
        rest = torch.cat([f for j, f in enumerate(folds) if j != i])
        split = {"train": {"y": y[rest], key: x[rest]}, "eval": {"y": y[held], key: x[held]}}
        predicted.append(predict(split | {"heldout": split["eval"]}, key, *config)["eval"])
    return rates(torch.cat(predicted), y[torch.cat(folds)])


def select_by_cv(data: dict, keys: list[str], grid: list[tuple], k: int) -> dict:
    """The feature set and head with the largest cross-validated recall minus over-refusal; its held-out
    figures fitted on train+eval and on train alone."""

    scores = {}
    for key in keys:
        for config in grid:
            scores[key, config] = cross_validated(data, key, config, k)
            print(f"{key:6s} {config}: {k}-fold recall/over-refusal {scores[key, config][0]:.3f}/"
                  f"{scores[key, config][1]:.3f}", flush=True)
    key, config = max(scores, key=lambda kc: scores[kc][0] - scores[kc][1])
    return {"chosen": [key, config], "cv": scores[key, config],
            "heldout_fit_on_train_and_eval": fit(data | {"train": pooled(data, key)}, key, *config)["heldout"],
            "heldout_fit_on_train": fit(data, key, *config)["heldout"]}


def fit(data: dict, key: str, shape: str, weight_decay: float, steps: int) -> dict:
    """:func:`rates` on the eval and held-out splits of a head fitted on the train split (:func:`predict`)."""
    predicted = predict(data, key, shape, weight_decay, steps)
    return {s: rates(pred, data[s]["y"]) for s, pred in predicted.items()}


def predict(data: dict, key: str, shape: str, weight_decay: float, steps: int) -> dict:
    """Class predictions on the eval and held-out splits of a head fitted full-batch on the train split."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    x = {s: data[s][key].float() for s in SPLITS}
    mu, sd = x["train"].mean(0), x["train"].std(0) + 1e-6
    x = {s: (v - mu) / sd for s, v in x.items()}
    h = x["train"].shape[1]
    head = (torch.nn.Linear(h, 3) if shape == "linear"
            else torch.nn.Sequential(torch.nn.Linear(h, h), torch.nn.GELU(), torch.nn.Linear(h, 3)))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=weight_decay)
    weights = torch.tensor([1.0, 3.0, 5.0])
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(head(x["train"]), data["train"]["y"], weight=weights).backward()
        opt.step()
    with torch.no_grad():
        return {s: head(x[s]).argmax(-1) for s in ("eval", "heldout")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="plain Qwen2-VL checkpoint directory")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--layers", default=",".join(map(str, LAYERS)),
                   help="decoder layers whose outputs are features (comma-separated, or all)")
    p.add_argument("--heads", choices=("both", *SHAPES), default="both", help="head shapes of the grid")
    p.add_argument("--suffix", default="", help="text appended to every rendered prompt (a probe)")
    p.add_argument("--system", default="", help="a system turn of this text before every prompt")
    p.add_argument("--features", default="", help="only the feature sets whose name matches this regex")
    p.add_argument("--cv", type=int, default=0, metavar="K",
                   help="choose feature set and head by K-fold cross-validation on train+eval (see above)")
    args = p.parse_args()
    data = extract(args.model, args.threads, args.layers, args.suffix, args.system)
    shapes = SHAPES if args.heads == "both" else (args.heads,)
    grid = list(itertools.product(shapes, WEIGHT_DECAYS, STEPS))
    keys = [k for k in data["train"] if k != "y" and re.search(args.features, k)]
    if args.cv:
        results = select_by_cv(data, keys, grid, args.cv)
        print(json.dumps(results))
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        return
    results = {}
    for key in keys:
        runs = [(config, fit(data, key, *config)) for config in grid]
        config, chosen = min(runs, key=lambda run: run[1]["eval"][1] - run[1]["eval"][0])
        meeting = sum(1 for _, r in runs if r["heldout"][0] >= 0.9 and r["heldout"][1] <= 0.1)
        results[key] = {"chosen": config, "eval": chosen["eval"], "heldout": chosen["heldout"],
                        "grid_meeting_heldout_targets": f"{meeting}/{len(runs)}"}
        (rr, orr), (hr, hor) = chosen["eval"], chosen["heldout"]
        print(f"{key:6s} {config}: eval recall/over-refusal {rr:.2f}/{orr:.3f}, held-out {hr:.2f}/{hor:.3f}, "
              f"grid heads meeting the held-out targets {meeting}/{len(runs)}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
