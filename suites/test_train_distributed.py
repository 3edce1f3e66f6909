"""Data-parallel ``so8t train``: 2 gloo processes under torchrun reach the generators of 1 process with the
same global batch, within a tolerance derived from float64 rounding carried through Adam."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from so8t.data import DEMO_TRAIN

STEPS, BATCH, LR = 3, 4, 3e-3
ADAM_EPS = 1e-8
REPO = Path(__file__).resolve().parents[1]


def train_args(so8t_dir: Path, out: Path) -> list[str]:
    return ["train", "--so8t-model", str(so8t_dir), "--train-data", str(DEMO_TRAIN), "--output-model", str(out),
            "--steps", str(STEPS), "--batch-size", str(BATCH), "--lr", str(LR), "--compute-dtype", "float64",
            "--save-every", "0", "--no-progress", "--threads", "1"]


def tolerance(so8t_dir: Path, metrics: Path) -> float:
    """Both runs compute the same float64 sums in a different order (per-rank partial sums, per-rank padding).
    A gradient entry summed over n terms then differs by at most n * u * G (u = 2^-53, G = the largest
    gradient entry of the run, logged as grad_max; n = tokens of the global batch x hidden size, the longest
    reduction of the backward pass). Adam's step lr * m/(sqrt(v) + eps) moves by at most lr / eps per unit of
    gradient change, so after STEPS steps |d generators| <= STEPS * lr / eps * n * u * G. A missing all-reduce
    or a per-rank normalisation changes the generators by ~lr, orders of magnitude more."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if '"eval"' not in line]
    g = max(r["grad_max"] for r in records)
    tokens = max(r["tokens"] for r in records)
    from so8t.checkpoint import CheckpointReader

    hidden = int(CheckpointReader(so8t_dir).text_config["hidden_size"])
    n = tokens * hidden
    return STEPS * LR / ADAM_EPS * n * 2.0**-53 * g


@pytest.mark.heavy  # a training run: grows with the model
@pytest.mark.whole_model(copies=2, dtype="float32")  # one training model per process
def test_two_gloo_processes_equal_one(so8t_random_dir, tmp_path):
    from so8t.cli import main

    one = tmp_path / "one"
    assert main(train_args(so8t_random_dir, one)) == 0
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "so8t.cli", *train_args(so8t_random_dir, two)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # the training state keeps the float64 parameters (the output file rounds them to float32)
    a, b = (torch.load(d.with_name(d.name + ".train") / "state.pt", weights_only=True)["params"] for d in (one, two))
    assert sorted(a) == sorted(b) and any(".generators" in k for k in a)
    gates = [k for k in a if k.endswith(".generators")]
    diff = max(float((a[k] - b[k]).abs().max()) for k in gates)
    source = load_file(str(so8t_random_dir / "so8t_gates.safetensors"))
    tol = tolerance(so8t_random_dir, one.with_name("one.train") / "metrics.jsonl")
    print(f"2-process vs 1-process: max |d generators| {diff:.3e} (float64), tolerance {tol:.3e}")
    assert diff <= tol
    trained = load_file(str(one / "so8t_gates.safetensors"))
    moved = max(float((trained[k].double() - source[k].double()).abs().max()) for k in source)
    assert moved > 100 * tol  # the comparison can tell a trained run from an untrained one
    head = [k for k in a if k.startswith("safety_head.")]
    assert head and max(float((a[k] - b[k]).abs().max()) for k in head) <= tol
    metrics_two = (two.with_name("two.train") / "metrics.jsonl").read_text().splitlines()
    assert len(metrics_two) == STEPS  # rank 0 alone wrote the log
