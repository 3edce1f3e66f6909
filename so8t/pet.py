"""PET regulariser: penalise curvature of the hidden-state trajectory over sequence positions.

For hidden states ``h[b, t, :]`` and a 0/1 mask ``m[b, t]`` (docs/reference.md section 1):

    d2[b, t] = h[b, t] - 2 h[b, t+1] + h[b, t+2]
    loss     = sum_{b,t} w[b,t] ||d2[b,t]||^2 / sum_{b,t} w[b,t],   w[b,t] = m[b,t] m[b,t+1] m[b,t+2]

i.e. the mean over valid triples of the squared L2 norm of the second difference. With no valid triple
(sequences shorter than 3, or everything masked) the loss is 0 (still connected to the graph).

Schedule over training progress ``p = step / total_steps``: weight 0.01 for ``p < 0.3``, 0.1 for
``0.3 <= p < 0.7``, 1.0 for ``p >= 0.7`` (a boundary step belongs to the later phase).
"""

from __future__ import annotations

import torch
from torch import nn

#: (progress threshold, weight) pairs: the weight applies while progress < threshold.
SCHEDULE: tuple[tuple[float, float], ...] = ((0.3, 0.01), (0.7, 0.1), (float("inf"), 1.0))


def pet_schedule(step: int, total_steps: int) -> float:
    """Weight of the PET loss at ``step`` (0-based) of ``total_steps``."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    progress = step / total_steps
    for threshold, weight in SCHEDULE:
        if progress < threshold:
            return weight
    return SCHEDULE[-1][1]  # pragma: no cover (inf threshold always matches)


def pet_sum(hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``||d2_t||^2`` over the valid triples of ``mask`` (``pet_loss`` times their count): no
    data-dependent branch, so it runs on any device without a device-to-host read."""
    if hidden_states.shape[1] < 3:
        return hidden_states.sum() * 0.0
    d2 = hidden_states[:, :-2] - 2.0 * hidden_states[:, 1:-1] + hidden_states[:, 2:]
    m = (mask != 0).to(d2.dtype)
    return (d2.pow(2).sum(dim=-1) * (m[:, :-2] * m[:, 1:-1] * m[:, 2:])).sum()


def pet_loss(hidden_states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Unscheduled PET loss of ``hidden_states`` ``[batch, seq, hidden]`` with optional ``mask`` ``[batch, seq]``."""
    if hidden_states.dim() != 3:
        raise ValueError(
            f"hidden_states must be [batch, seq, hidden], got shape {tuple(hidden_states.shape)}"
        )
    _batch, seq_len, _ = hidden_states.shape
    if seq_len < 3:
        return hidden_states.sum() * 0.0
    if mask is None:
        d2 = hidden_states[:, :-2] - 2.0 * hidden_states[:, 1:-1] + hidden_states[:, 2:]
        return d2.pow(2).sum(dim=-1).mean()
    m = mask != 0
    count = (m[:, :-2] & m[:, 1:-1] & m[:, 2:]).sum()
    if count == 0:
        return hidden_states.sum() * 0.0
    return pet_sum(hidden_states, mask) / count


class PETRegularizer(nn.Module):
    """Scheduled PET loss: ``forward(h, mask, step) = pet_schedule(step, total_steps) * pet_loss(h, mask)``."""

    def __init__(self, total_steps: int):
        super().__init__()
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.total_steps = total_steps

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor | None, step: int) -> torch.Tensor:
        return pet_schedule(step, self.total_steps) * pet_loss(hidden_states, mask)
