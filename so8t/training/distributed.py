"""Data parallelism on ``torch.distributed``, launched by ``torchrun`` (gloo on CPU, nccl on GPUs).

Every rank holds the whole (frozen) model and the same trainable parameters, reads its shard of each
global batch (``so8t.training.batching.shard``), and computes loss *sums*; the per-part counts and then the
gradients of the trainable parameters are all-reduced with SUM. Since every sum is divided by the global
count before backward, the summed gradient is the gradient of the one-process loss on the global batch.
Rank 0 alone writes checkpoints, metrics and the output model.

Without ``WORLD_SIZE`` (or with 1) nothing is initialised and every function is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def setup(device: str = "cpu") -> World:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(device=device)
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return World(rank=rank, size=size, device=device)


def teardown(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """In-place SUM of ``tensor`` over ranks; returns it."""
    if world.active:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_grads(world: World, params: list[torch.nn.Parameter]) -> None:
    """SUM the gradients of ``params`` over ranks in one flat buffer (missing gradients count as 0)."""
    if not world.active:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce_sum(world, flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def barrier(world: World) -> None:
    if world.active:
        import torch.distributed as dist

        dist.barrier()
