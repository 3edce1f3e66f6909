"""Everything a training run holds: options, data, the model with its frozen base, optimizer, schedule.

Trainable: the generators of every gate (all sites, all layers, ``attn_safe``/``attn_cmd`` included) and
the safety head (added with a seeded init when the checkpoint has none). Every Qwen2-VL weight is
frozen: ``requires_grad=False``, so it gets no gradient and the optimizer never sees it. Weights load in
the compute dtype (bf16 checkpoints convert exactly to float32/float64); the checkpoint files keep their
stored dtype because the output copies the source shards byte for byte.

Optimizer: Adam (betas 0.9/0.999, eps 1e-8, no weight decay, so zero gradients leave every parameter
bit-identical); learning rate: linear warm-up over the first 10% of the steps, then cosine decay to 10%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from so8t.checkpoint.so8t_dir import GATES_FILE, SO8TCheckpoint
from so8t.errors import DataError, TrainError
from so8t.io import sha256_file
from so8t.training import defaults
from so8t.training.data import Dataset, load_dataset, load_tokenizer
from so8t.training.defaults import DEFAULT_WEIGHTS
from so8t.training.distributed import World

COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass
class TrainOptions:
    so8t_model: Path
    train_data: Path
    output_model: Path
    eval_data: Path | None = None
    safety_calibration_data: Path | None = None  # labelled prompts for the head's operating point (calibration.py)
    min_refuse_recall: float = defaults.MIN_REFUSE_RECALL
    steps: int = defaults.STEPS
    batch_size: int = defaults.BATCH_SIZE
    lr: float = defaults.LR
    seed: int = defaults.SEED
    lm_weight: float = DEFAULT_WEIGHTS["lm"]
    safety_weight: float = DEFAULT_WEIGHTS["safety"]
    pet_weight: float = DEFAULT_WEIGHTS["pet"]
    eval_every: int = defaults.EVAL_EVERY
    save_every: int = defaults.SAVE_EVERY
    resume: bool = False
    compute_dtype: str = defaults.COMPUTE_DTYPE
    device: str = defaults.DEVICE
    progress: bool = True
    eval_batch_size: int = 16
    threads: int | None = None  # torch intra-op threads during training (None: torch's default)

    @property
    def weights(self) -> dict[str, float]:
        return {"lm": self.lm_weight, "safety": self.safety_weight, "pet": self.pet_weight}

    def check(self) -> None:
        """``TrainError`` for an option no run can use (before anything is read or written)."""
        problems = [
            (self.steps < 0, f"--steps must be >= 0, got {self.steps}"),
            (self.batch_size < 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (not self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (any(not w >= 0 for w in self.weights.values()), f"loss weights must be >= 0, got {self.weights}"),
            (self.eval_every < 0 or self.save_every < 0, "--eval-every and --save-every must be >= 0"),
            (self.threads is not None and self.threads < 1, f"--threads must be >= 1, got {self.threads}"),
            (not 0 <= self.min_refuse_recall <= 1,
             f"--min-refuse-recall must be between 0 and 1, got {self.min_refuse_recall}"),
            (self.compute_dtype not in (*COMPUTE_DTYPES, "auto"),
             f"--compute-dtype must be one of {[*COMPUTE_DTYPES, 'auto']}"),
        ]
        for bad, message in problems:
            if bad:
                raise TrainError(message)
        if not Path(self.output_model).parent.is_dir():
            raise TrainError("the output's parent directory does not exist", path=self.output_model)


    def resolved(self) -> TrainOptions:
        """These options with ``--device auto`` and ``--compute-dtype auto`` decided: CUDA when this torch
        sees a GPU (else the CPU), bfloat16 on CUDA and float32 on the CPU. A CUDA device this torch cannot
        use is a one-line ``TrainError``, before anything is read."""
        import dataclasses

        device = str(self.device)
        kind = device.split(":", 1)[0]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif kind not in ("cpu", "cuda"):
            raise TrainError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
        elif kind == "cuda" and not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise TrainError(f"--device {device}: torch {torch.__version__} ({build}) sees no CUDA device",
                             hint="use --device cpu, or install a CUDA build of torch on a machine with a GPU")
        dtype = self.compute_dtype
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        return dataclasses.replace(self, device=device, compute_dtype=dtype)


def lr_factor(step: int, total: int) -> float:
    """Warm-up over ``ceil(total / 10)`` steps, then cosine from 1 to 0.1 at the last step."""
    warmup = max(1, math.ceil(total / 10))
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


@dataclass
class Session:
    options: TrainOptions
    world: World
    model: torch.nn.Module
    train: Dataset
    eval: Dataset | None
    pad_id: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    trainable: list[tuple[str, torch.nn.Parameter]] = field(default_factory=list)
    fingerprint: dict = field(default_factory=dict)
    resume_state: dict | None = None  # the checked training state when resuming
    calibration: Dataset | None = None  # labelled prompts for the head's operating point

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.trainable]


def _context_length(checkpoint: SO8TCheckpoint) -> int:
    return int(checkpoint.reader.text_config.max_position_embeddings)


def load_data(options: TrainOptions, checkpoint: SO8TCheckpoint
              ) -> tuple[object, Dataset, Dataset | None, Dataset | None]:
    """Tokenizer, training, eval and calibration data (the last two None when not given). Calibration data
    must label every line: an unlabelled prompt cannot place an operating point."""
    tokenizer = load_tokenizer(checkpoint.path)
    limit = _context_length(checkpoint)
    train = load_dataset(options.train_data, tokenizer, limit)
    evaluation = load_dataset(options.eval_data, tokenizer, limit) if options.eval_data else None
    calibration = None
    if options.safety_calibration_data:
        calibration = load_dataset(options.safety_calibration_data, tokenizer, limit)
        unlabelled = next((e for e in calibration.examples if e.label is None), None)
        if unlabelled is not None:
            raise DataError("calibration data needs a \"label\" on every line", path=unlabelled.where)
    return tokenizer, train, evaluation, calibration


def build_model(options: TrainOptions, checkpoint: SO8TCheckpoint) -> torch.nn.Module:
    """The SO8T model with a frozen base and trainable gates + head in the training dtype."""
    from so8t.model import SO8TModel
    from so8t.safety import SafetyHead

    dtype = COMPUTE_DTYPES[options.compute_dtype]
    model = SO8TModel.from_dir(checkpoint.path, dtype=dtype)
    if model.safety_head is None:
        model.safety_head = SafetyHead(checkpoint.hidden_size, seed=options.seed)
    model.qwen.requires_grad_(False)
    master = torch.float64 if dtype == torch.float64 else torch.float32
    model.gates.to(master)
    model.safety_head.to(master)
    return model.to(options.device).eval()


def fingerprint(options: TrainOptions, world: World, train: Dataset, evaluation: Dataset | None) -> dict:
    """What must match for ``--resume`` to continue the same trajectory."""
    return {
        "source_gates_sha256": sha256_file(Path(options.so8t_model) / GATES_FILE),
        "train_sha256": train.sha256,
        "eval_sha256": evaluation.sha256 if evaluation else None,
        "steps": options.steps,
        "batch_size": options.batch_size,
        "lr": options.lr,
        "seed": options.seed,
        "weights": options.weights,
        "compute_dtype": options.compute_dtype,
        "world_size": world.size,
    }


def open_session(options: TrainOptions, world: World) -> Session:
    """Check options, read all data (errors before any output), build model and optimizer."""
    options = options.resolved()
    options.check()
    if options.batch_size < world.size:
        raise TrainError(f"--batch-size {options.batch_size} is smaller than the {world.size} ranks")
    checkpoint = SO8TCheckpoint(options.so8t_model)
    tokenizer, train, evaluation, calibration = load_data(options, checkpoint)
    prints = fingerprint(options, world, train, evaluation)
    resume_state = None
    if options.resume:  # refuse a foreign state before the (heavy) model load
        from so8t.training.checkpointing import load_state, state_dir

        resume_state = load_state(state_dir(options.output_model), prints)
    model = build_model(options, checkpoint)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.Adam([p for _, p in trainable], lr=options.lr, betas=(0.9, 0.999), eps=1e-8)
    total = max(1, options.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Session(
        options, world, model, train, evaluation, int(pad), optimizer, scheduler, trainable, prints, resume_state,
        calibration,
    )
