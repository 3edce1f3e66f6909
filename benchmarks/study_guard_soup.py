"""Does averaging guards trained with other seeds help? A study on the real-weights model.

The seed of ``so8t train`` (the data order) moves the trained guard's held-out figures more than twice the
steps or more data do (docs/benchmarks.md, the guard). Runs that start from the same conversion (the same
identity gates and head initialisation) and differ only in the seed can be averaged parameter by parameter,
a "model soup" (Wortsman et al., ICML 2022), which stays one model: the averaged gate generators still map
into SO(8) (``so8t.group``), so the soup folds and exports like any SO8T checkpoint. This writes that
average: every tensor of the runs' ``so8t_gates.safetensors`` (gate generators and the safety head) averaged
in float64, the weight files hard-linked from the first run (or copied across filesystems).

    so8t convert --input-model "$(python -m so8t.testing.real_weights)" --output-model conv --safety-features
    so8t train --so8t-model conv --train-data so8t/data/guard_safety_train.jsonl \
        --eval-data so8t/data/guard_safety_heldout.jsonl --output-model sS --steps 60 --batch-size 8 --seed S
    python benchmarks/study_guard_soup.py s0 s1 s2 --output soup
    so8t train --so8t-model soup --train-data so8t/data/guard_safety_train.jsonl \
        --eval-data so8t/data/guard_safety_heldout.jsonl --output-model e --steps 0   # evaluates only

A study, not a benchmark: nothing here runs in a gate. Results: docs/benchmarks.md (the guard).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's so8t, not an installed one


def main(argv: list[str] | None = None) -> int:
    from safetensors.torch import load_file, save_file

    from so8t.checkpoint.so8t_dir import GATES_FILE
    from so8t.copyhash import link_hashed

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="trained SO8T checkpoints of the same conversion")
    p.add_argument("--output", type=Path, required=True, help="the averaged SO8T checkpoint (must not exist)")
    args = p.parse_args(argv)
    if args.output.exists():
        p.error(f"{args.output}: exists")
    states = [load_file(str(run / GATES_FILE)) for run in args.runs]
    keys = set(states[0])
    for run, state in zip(args.runs, states):
        if set(state) != keys or any(state[k].shape != states[0][k].shape for k in keys):
            p.error(f"{run / GATES_FILE}: other tensors than {args.runs[0] / GATES_FILE}")
    soup = {k: (sum(s[k].double() for s in states) / len(states)).to(states[0][k].dtype) for k in sorted(keys)}
    args.output.mkdir(parents=True)
    for f in sorted(args.runs[0].iterdir()):
        if f.is_file() and f.name != GATES_FILE:
            link_hashed(f, args.output / f.name)
    save_file(soup, str(args.output / GATES_FILE), metadata={"format": "pt"})
    print(f"wrote {args.output}: the average of {len(states)} runs' {GATES_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
