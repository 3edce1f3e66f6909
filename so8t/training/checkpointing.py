"""Training state (for ``--resume``) and the output SO8T checkpoint.

Training state lives next to the output, in ``<OUT>.train/`` (:func:`state_dir`):

* ``state.pt``: ``step`` (completed steps = data position: batch ``step`` comes next), the trainable
  parameters in their training dtype, optimizer and scheduler state, torch's RNG state, and a
  ``fingerprint`` of everything that shapes the trajectory (data sha256s, steps, batch, lr, seed, loss
  weights, compute dtype, world size, the source gates' sha256). Replaced atomically, so an interrupt
  leaves the previous complete state.
* ``metrics.jsonl``: one line per logged step and evaluation (rank 0).

The output directory is an SO8T checkpoint like ``so8t convert`` writes (source shards byte for byte,
tokenizer files, ``so8t_gates.safetensors`` with the trained generators and head, config.json whose
``so8t`` section gains ``training``: trained, data sha256s, steps, final metrics), written atomically.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from so8t.checkpoint.so8t_dir import CONFIG_FILE, GATES_FILE
from so8t.errors import TrainError
from so8t.io import atomic_path

STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"


def state_dir(output_model: str | Path) -> Path:
    out = Path(output_model)
    return out.with_name(out.name + ".train")


def save_state(directory: Path, state: dict) -> Path:
    """Write ``state.pt`` atomically (the previous one stays until the new one is complete)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / STATE_FILE
    with atomic_path(final) as tmp:
        torch.save(state, tmp)
    return final


def load_state(directory: Path, fingerprint: dict) -> dict:
    """The saved state; ``TrainError`` when there is none or it belongs to a different run."""
    path = directory / STATE_FILE
    if not path.is_file():
        raise TrainError("no training state to resume from", path=path, hint="start without --resume")
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = state.get("fingerprint", {})
    diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if diff:
        raise TrainError(
            f"the saved training state was made with different {', '.join(diff)}",
            path=path,
            hint="resume with the original options, or remove the state directory to start over",
        )
    return state


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only metric lines of steps ``<= step`` (lines logged after the resumed checkpoint go)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def append_metrics(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def write_output(source: Path, output: Path, gates_state: dict, training: dict, metrics: Path | None) -> Path:
    """The trained SO8T checkpoint at ``output`` (atomically; see the module docstring)."""
    config = json.loads((source / CONFIG_FILE).read_text())
    section = dict(config["so8t"])
    section["safety_head"] = any(k.startswith("safety_head.") for k in gates_state)
    section["training"] = training
    config["so8t"] = section
    if output.resolve() == source.resolve() or source.resolve() in output.resolve().parents:
        raise TrainError("--output-model must not be the input checkpoint or lie inside it", path=output)
    with atomic_path(output) as tmp:
        tmp.mkdir()
        for src in sorted(source.rglob("*")):
            rel = src.relative_to(source)
            if src.is_dir() or rel.as_posix() in (CONFIG_FILE, GATES_FILE):
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / rel)
        save_file(gates_state, str(tmp / GATES_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        shutil.copymode(tmp / CONFIG_FILE, tmp / GATES_FILE)
        if metrics is not None and metrics.is_file():
            shutil.copyfile(metrics, tmp / "training_metrics.jsonl")
    return output
