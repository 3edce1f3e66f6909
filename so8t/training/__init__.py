"""``so8t train``: learn the SO(8) gates and the safety head (with PET) on a frozen Qwen2-VL.

Modules: ``data`` (JSONL -> tokenized examples), ``batching`` (deterministic global batches, shards,
padding), ``losses`` (LM / class-weighted safety / PET as sums), ``metrics`` (eval figures),
``calibration`` (the safety head's operating point), ``session`` (options, frozen model, optimizer),
``evaluation`` (eval figures and calibration of a session), ``loop`` (the loop, resume),
``checkpointing`` (training state and the output SO8T checkpoint), ``distributed`` (torchrun data
parallelism), ``defaults`` (light: read by ``so8t --help``). The names below load lazily, so importing
``so8t.training.defaults`` pulls in no torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TrainInterrupted": "so8t.training.loop",
    "TrainResult": "so8t.training.loop",
    "evaluate": "so8t.training.evaluation",
    "train": "so8t.training.loop",
    "TrainOptions": "so8t.training.session",
    "DEFAULT_WEIGHTS": "so8t.training.defaults",
}
__all__ = ["DEFAULT_WEIGHTS", "TrainInterrupted", "TrainOptions", "TrainResult", "evaluate", "train"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'so8t.training' has no attribute {name!r}")
