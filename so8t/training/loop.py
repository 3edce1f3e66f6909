"""``train(options)``: the training loop behind ``so8t train``.

Per step ``s`` (0-based): global batch ``s`` (so8t.training.batching), this rank's shard, loss sums
(so8t.training.losses), global counts all-reduced, weighted total with PET's phase factor at ``s`` of
``steps``, backward, trainable gradients all-reduced, Adam step, scheduler step. Rank 0 logs a line per
step to ``metrics.jsonl`` and shows a tqdm bar (each loss part, lr, PET phase, steps/s); every
``save_every`` steps and at the end it writes the training state; after the last step it calibrates the
safety head when calibration data is given (so8t.training.evaluation, after the final state, so a resumed
run calibrates the same head); every ``eval_every`` steps and at the end it evaluates; finally it writes
the output SO8T checkpoint (with the final metrics and the calibration in config.json).

Resume: the state holds the completed step count (= data position), parameters, optimizer, scheduler
and RNG; batches depend on the step alone, so a resumed run retraces the uninterrupted one exactly.

Note [denormals]: the gradients through the degree-18 Taylor expm of the gates (and through the frozen
embedding) underflow into float32 denormals, which x86 CPUs process ~100x slower (a 32x8x8 bmm: 450 us
instead of 7 us; a demo step 0.54 s -> 0.08 s). Training runs with ``torch.set_flush_denormal(True)``
(values below 1.2e-38 become 0, far below any tolerance) and restores the setting afterwards.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from so8t.pet import SCHEDULE, pet_schedule
from so8t.training import checkpointing as ckpt
from so8t.training.batching import collate, global_batch_indices, shard
from so8t.training.distributed import World, all_reduce_grads, all_reduce_sum, barrier, setup, teardown
from so8t.training.evaluation import calibrate, evaluate, head_trained
from so8t.training.losses import PARTS, combine, loss_sums
from so8t.training.session import Session, TrainOptions, open_session


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``last_step`` is the step of the last complete state (None: none yet)."""

    def __init__(self, last_step: int | None, state_dir: Path):
        super().__init__()
        self.last_step, self.state_dir = last_step, state_dir


@dataclass
class TrainResult:
    """``seconds``: the whole call (loading, steps, calibration, evaluation, writing the output);
    ``step_seconds``: the optimizer steps alone, which is what ``tokens`` per second is measured over."""

    output: Path
    steps: int
    seconds: float
    tokens: int
    metrics: dict | None
    head_trained: bool
    step_seconds: float


def pet_phase(factor: float) -> int:
    """1, 2 or 3: which of PET's schedule phases a factor belongs to."""
    return [w for _, w in SCHEDULE].index(factor) + 1


#: Steps between reads of the logged figures back from the device. On a GPU each read waits for the queued
#: work (a stall per read), so a CUDA run reads every ``LOG_EVERY_CUDA`` steps, all of them at once; on the CPU
#: there is nothing to wait for and every step is read as it ends.
LOG_EVERY_CUDA = 10


def log_every(device: str) -> int:
    return LOG_EVERY_CUDA if str(device).startswith("cuda") else 1


@dataclass
class PendingRecord:
    """One step's log line before it is read from the device: ``values`` is a float64 tensor on the device,
    the :data:`PARTS` (NaN without a count), the weighted loss, the gradient max and the global tokens."""

    step: int
    lr: float
    pet_factor: float
    values: torch.Tensor


def train_step(session: Session, step: int) -> PendingRecord:
    """One optimisation step; returns its log line, still on the device (global values on every rank)."""
    o, world = session.options, session.world
    indices = shard(global_batch_indices(len(session.train), o.batch_size, o.seed, step), world.rank, world.size)
    batch = collate([session.train.examples[i] for i in indices], session.pad_id).to(world.device)
    out = loss_sums(session.model, batch, need_lm=o.lm_weight > 0)
    counts = all_reduce_sum(world, out.counts.clone())
    total, _ = combine(out.sums, counts, o.weights, step, max(1, o.steps))
    session.optimizer.zero_grad(set_to_none=True)
    total.backward()
    all_reduce_grads(world, session.params)
    grads = [p.grad.reshape(-1) for p in session.params if p.grad is not None]
    grad_max = torch.cat(grads).abs().max().double() if grads else counts.new_zeros(())  # one reduction
    lr = session.optimizer.param_groups[0]["lr"]
    session.optimizer.step()
    session.scheduler.step()
    sums = all_reduce_sum(world, torch.stack([out.sums[p].detach().double() for p in PARTS]))
    logged, parts = combine({p: sums[i] for i, p in enumerate(PARTS)}, counts, o.weights, step, max(1, o.steps))
    tokens = all_reduce_sum(world, batch.attention_mask.sum().double().reshape(1))
    values = torch.cat([parts, logged.detach().double().reshape(1), grad_max.reshape(1), tokens])
    return PendingRecord(step + 1, lr, pet_schedule(step, max(1, o.steps)), values)


def read_records(pending: list[PendingRecord], lm_weight: float) -> list[dict]:
    """The log lines of ``pending`` steps, read from the device in one transfer."""
    if not pending:
        return []
    rows = torch.stack([p.values for p in pending]).tolist()
    records = []
    for p, row in zip(pending, rows):
        parts = {name: (None if math.isnan(v) else v) for name, v in zip(PARTS, row)}
        record = {"step": p.step, "lr": p.lr, "pet_phase": pet_phase(p.pet_factor), **parts,
                  "pet_factor": p.pet_factor, "loss": row[3], "grad_max": row[4], "tokens": int(row[5])}
        if lm_weight == 0:
            record["lm"] = None  # not computed
        records.append(record)
    return records


def state_of(session: Session, step: int) -> dict:
    return {
        "step": step,
        "data_position": step * session.options.batch_size,
        "params": {n: p.detach().clone() for n, p in session.trainable},
        "optimizer": session.optimizer.state_dict(),
        "scheduler": session.scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "fingerprint": session.fingerprint,
    }


def restore(session: Session, state: dict) -> int:
    with torch.no_grad():
        for name, param in session.trainable:
            param.copy_(state["params"][name])
    session.optimizer.load_state_dict(state["optimizer"])
    session.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return int(state["step"])


def _start(session: Session, directory: Path) -> int:
    metrics = directory / ckpt.METRICS_FILE
    if session.options.resume:
        step = restore(session, session.resume_state)
        if session.world.is_main:
            ckpt.truncate_metrics(metrics, step)
        return step
    if session.world.is_main:
        directory.mkdir(parents=True, exist_ok=True)
        metrics.write_text("")
    return 0


def _bar(session: Session, start: int):
    from tqdm import tqdm

    show = session.options.progress and session.world.is_main
    return tqdm(total=session.options.steps, initial=start, unit="step", desc="so8t train", disable=not show)


def _postfix(record: dict) -> dict:
    fmt = {p: ("-" if record[p] is None else f"{record[p]:.4g}") for p in PARTS}
    return {**fmt, "lr": f"{record['lr']:.2e}", "pet_phase": record["pet_phase"]}


def run_steps(session: Session, directory: Path) -> tuple[int, int]:
    """Steps from the resumed position to the end; returns (start step, tokens seen in this run)."""
    o, world = session.options, session.world
    start = _start(session, directory)
    last_saved = start if o.resume else None
    tokens = 0
    pending: list[PendingRecord] = []
    every = log_every(world.device)

    def flush() -> None:
        nonlocal tokens
        records = read_records(pending, o.lm_weight)
        pending.clear()
        for record in records:
            tokens += record["tokens"]
            if world.is_main:
                ckpt.append_metrics(directory / ckpt.METRICS_FILE, record)
        if records:
            bar.set_postfix(_postfix(records[-1]))

    with _bar(session, start) as bar:
        try:
            for step in range(start, o.steps):
                pending.append(train_step(session, step))
                bar.update(1)
                done = step + 1
                evaluate_now = bool(o.eval_every and session.eval and done % o.eval_every == 0 and done < o.steps)
                save_now = bool(o.save_every and done % o.save_every == 0 and done < o.steps)
                if done % every == 0 or done == o.steps or evaluate_now or save_now:
                    flush()  # the metrics file is complete up to every state and evaluation written
                if evaluate_now:
                    _log_eval(session, directory, done)
                if save_now:
                    _save(session, directory, done)
                    last_saved = done
        except KeyboardInterrupt:
            raise TrainInterrupted(last_saved, directory) from None
    return start, tokens


def _save(session: Session, directory: Path, step: int) -> None:
    if session.world.is_main:
        ckpt.save_state(directory, state_of(session, step))
    barrier(session.world)


def _log_eval(session: Session, directory: Path, step: int) -> dict:
    metrics = evaluate(session)
    if session.world.is_main:
        ckpt.append_metrics(directory / ckpt.METRICS_FILE, {"step": step, "eval": metrics})
    return metrics


def training_record(session: Session, metrics: dict | None, calibration: dict | None = None) -> dict:
    o = session.options
    return {
        "trained": o.steps > 0,
        "safety_head_trained": head_trained(session),
        "train_data": {"name": session.train.path.name, "sha256": session.train.sha256,
                       "examples": len(session.train)},
        "eval_data": None if session.eval is None else {
            "name": session.eval.path.name, "sha256": session.eval.sha256, "examples": len(session.eval)},
        "steps": o.steps, "batch_size": o.batch_size, "lr": o.lr, "seed": o.seed,
        "loss_weights": o.weights, "compute_dtype": o.compute_dtype, "world_size": session.world.size,
        "eval_metrics": metrics,
        "calibration": calibration,
    }


def train(options: TrainOptions, world: World | None = None) -> TrainResult:
    """Run ``so8t train`` (see the module docstring); joins torchrun's process group if there is one."""
    options = options.resolved()
    own_world = world is None
    world = world or setup(options.device)
    flush = torch.set_flush_denormal(True)  # Note [denormals]
    threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        started = time.perf_counter()
        session = open_session(options, world)
        directory = ckpt.state_dir(options.output_model)
        stepping = time.perf_counter()
        start, tokens = run_steps(session, directory)
        step_seconds = time.perf_counter() - stepping
        _save(session, directory, options.steps)  # before calibration: a resumed run calibrates the same head
        calibration = calibrate(session)
        if calibration and world.is_main:
            ckpt.append_metrics(directory / ckpt.METRICS_FILE, {"step": options.steps, "calibration": calibration})
        metrics = _log_eval(session, directory, options.steps) if session.eval else None
        if world.is_main:
            ckpt.write_output(
                Path(options.so8t_model), Path(options.output_model), session.model.gates_file_state(),
                training_record(session, metrics, calibration), directory / ckpt.METRICS_FILE,
            )
        barrier(world)
        seconds = time.perf_counter() - started
        return TrainResult(Path(options.output_model), options.steps - start, seconds, tokens, metrics,
                           head_trained(session), step_seconds)
    finally:
        torch.set_num_threads(threads)
        if flush:
            torch.set_flush_denormal(False)
        if own_world:
            teardown(world)
