"""Deterministic batches: which examples make global batch ``step``, each rank's shard, and padding.

Order: epoch ``e`` visits the examples in the permutation drawn by a ``torch.Generator`` seeded with
``seed * 1_000_003 + e``; global batch ``s`` is the ``batch_size`` examples at stream positions
``[s * B, (s + 1) * B)`` of the concatenated epochs. The data position is therefore a function of the step
alone, which is what makes resume and data parallelism exact: rank ``r`` of ``w`` takes the global
batch's examples ``r, r + w, ...``.

Padding is on the right with ``pad_id``; ``attention_mask`` is 1 on real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from so8t.training.data import Example


@dataclass
class Batch:
    """``input_ids``, ``attention_mask``, ``targets`` (1 = LM target) ``[b, t]``; ``labels`` ``[b]``
    (class index, -1 = unlabelled); ``lm_index``: the flat positions ``row * (t - 1) + (t' - 1)`` of the LM
    targets among the ``[b, t - 1]`` predicting positions, found on the host when the batch is made, so the
    loss on a GPU needs no data-dependent shape (no device-to-host read)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    labels: torch.Tensor
    lm_index: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.lm_index is None:
            self.lm_index = (self.targets[:, 1:] != 0).reshape(-1).nonzero().reshape(-1)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device) -> Batch:
        """The same batch on ``device`` (itself when it is there already); every tensor goes along."""
        if self.input_ids.device == torch.device(device):
            return self
        return Batch(*(t.to(device, non_blocking=True) for t in (self.input_ids, self.attention_mask,
                                                                   self.targets, self.labels, self.lm_index)))


def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def global_batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Dataset indices of global batch ``step`` (see the module docstring)."""
    out: list[int] = []
    position = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(position, n)
        perm = _permutation(n, seed, epoch)
        take = perm[offset : offset + batch_size - len(out)]
        out.extend(take)
        position += len(take)
    return out


def shard(indices: list[int], rank: int, world: int) -> list[int]:
    """Rank ``rank``'s share of a global batch."""
    return indices[rank::world]


def collate(examples: list[Example], pad_id: int) -> Batch:
    """Right-padded tensors of a list of examples (at least one)."""
    length = max(len(e.input_ids) for e in examples)
    b = len(examples)
    ids = torch.full((b, length), pad_id, dtype=torch.long)
    mask = torch.zeros(b, length, dtype=torch.long)
    targets = torch.zeros(b, length, dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids[row, :n] = torch.tensor(ex.input_ids)
        mask[row, :n] = 1
        targets[row, :n] = torch.tensor(ex.targets)
    labels = torch.tensor([-1 if e.label is None else e.label for e in examples], dtype=torch.long)
    return Batch(ids, mask, targets, labels)


def sequential_batches(examples: tuple[Example, ...], batch_size: int, pad_id: int):
    """Evaluation order: the file order, in batches of ``batch_size``."""
    for start in range(0, len(examples), batch_size):
        yield collate(list(examples[start : start + batch_size]), pad_id)
