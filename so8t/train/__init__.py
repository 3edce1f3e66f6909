"""``so8t train``: learn the SO(8) gates and the safety head (with PET) on a frozen Qwen2-VL.

Modules: ``data`` (JSONL -> tokenized examples), ``batching`` (deterministic global batches, shards,
padding), ``losses`` (LM / class-weighted safety / PET as sums), ``metrics`` (eval figures),
``session`` (options, frozen model, optimizer), ``loop`` (the loop, eval, resume), ``checkpointing``
(training state and the output SO8T checkpoint), ``distributed`` (torchrun data parallelism).
"""

from so8t.train.loop import TrainInterrupted, TrainResult, evaluate, train
from so8t.train.session import DEFAULT_WEIGHTS, TrainOptions

__all__ = ["DEFAULT_WEIGHTS", "TrainInterrupted", "TrainOptions", "TrainResult", "evaluate", "train"]
