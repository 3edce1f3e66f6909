"""The three training losses as (sum, count) pairs, so data-parallel ranks can normalise globally.

For one batch (row vectors; ``h`` = final-norm hidden states ``[b, t, hidden]``):

* LM: next-token cross-entropy ``-log p(x_t | x_<t)`` summed over target tokens (``targets[t] = 1``: the
  assistant tokens of a chat, every token but the first of a text); count = number of targets.
* safety: class-weighted cross-entropy of ``SafetyHead.classify(h, mask)`` (the last real token, the
  position the head reads at run time) summed as ``sum_i w[y_i] * ce_i`` over labelled rows, count
  ``sum_i w[y_i]`` (torch's weighted mean); weights :data:`CLASS_WEIGHTS`.
* PET: :func:`so8t.pet.pet_loss` (mean squared second difference over valid triples) times the number of
  valid triples; count = valid triples.

``combine`` divides each sum by its global count (0 when the count is 0) and weights the parts; PET's
weight is multiplied by :func:`so8t.pet.pet_schedule`. Logits are computed only at target positions and
cross-entropies in float32 whatever the compute dtype.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from so8t.pet import pet_schedule, pet_sum
from so8t.safety import SAFETY_CLASSES
from so8t.training.batching import Batch

#: SO8T's class weights for the safety cross-entropy (a missed REFUSE costs 5x a wrong ALLOW).
CLASS_WEIGHTS: dict[str, float] = {"ALLOW": 1.0, "ESCALATE": 3.0, "REFUSE": 5.0}
PARTS = ("lm", "safety", "pet")


@dataclass
class LossSums:
    """Per-part sums (tensors, on the graph) and counts ``[3]`` (float64, LM/safety/PET order)."""

    sums: dict[str, torch.Tensor]
    counts: torch.Tensor
    safety_logits: torch.Tensor | None
    labels: torch.Tensor


def class_weights(device=None) -> torch.Tensor:
    return torch.tensor([CLASS_WEIGHTS[c] for c in SAFETY_CLASSES], dtype=torch.float32, device=device)


def final_hidden_states(model, batch: Batch) -> torch.Tensor:
    """Final-norm hidden states of an :class:`~so8t.model.SO8TModel` on a text batch (gates applied)."""
    qwen = model.qwen
    qwen.model.rope_deltas = None  # no state from an earlier call (as so8t.model.forward_qwen2vl)
    cached = getattr(model, "cached_rotations", contextlib.nullcontext)
    with cached():
        out = qwen.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    return out.last_hidden_state


def valid_triples(mask: torch.Tensor) -> torch.Tensor:
    """Number of positions ``t`` with ``mask[t] = mask[t+1] = mask[t+2] = 1`` (PET's count), a 0-d tensor on
    the mask's device."""
    if mask.shape[1] < 3:
        return mask.new_zeros(())
    m = mask != 0
    return (m[:, :-2] & m[:, 1:-1] & m[:, 2:]).sum()


def batch_counts(batch: Batch) -> torch.Tensor:
    """The counts of :class:`LossSums` from the batch alone (no forward pass needed): float64 ``[3]`` on the
    batch's device, computed there (no device-to-host read; the class weights are made on that device)."""
    device = batch.labels.device
    labelled = batch.labels >= 0
    weights = class_weights(device).double()[batch.labels.clamp_min(0)] * labelled
    return torch.stack([batch.targets[:, 1:].sum().double(), weights.sum(),
                        valid_triples(batch.attention_mask).double()])


def loss_sums(model, batch: Batch, need_lm: bool = True) -> LossSums:
    """Forward one batch and return every part's sum (``need_lm=False`` skips the LM head). Every tensor is
    made on the batch's device and nothing is read back to the host, so a GPU step never stalls here; the
    tests run it on the ``meta`` device, where any such read or stray CPU tensor fails."""
    hidden = final_hidden_states(model, batch)
    zero = hidden.sum() * 0.0
    sums = {"lm": zero.float(), "safety": zero.float(), "pet": zero.float()}
    if need_lm:
        predicting = hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, batch.lm_index)
        targets = batch.input_ids[:, 1:].reshape(-1).index_select(0, batch.lm_index)
        sums["lm"] = F.cross_entropy(model.qwen.lm_head(predicting).float(), targets, reduction="sum")
    safety_logits = None
    if model.safety_head is not None:
        safety_logits = model.safety_head.classify(hidden, batch.attention_mask).float()
        labelled = batch.labels >= 0
        y = batch.labels.clamp_min(0)  # unlabelled rows weigh 0 below
        ce = F.cross_entropy(safety_logits, y, reduction="none")
        sums["safety"] = (ce * class_weights(ce.device)[y] * labelled).sum()
    sums["pet"] = pet_sum(hidden, batch.attention_mask).float()
    return LossSums(sums, batch_counts(batch), safety_logits, batch.labels)


def combine(
    sums: dict[str, torch.Tensor], counts: torch.Tensor, weights: dict[str, float], step: int, total: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted total loss (on the graph) and each normalised part, unweighted and detached, as a float64
    tensor ``[3]`` in :data:`PARTS` order (NaN for a part without any count). Both stay on the device of
    ``sums``: reading them is the caller's choice (the loop logs every few steps). Counts are whole tokens,
    triples or class weights >= 1, so a zero count has a zero sum and dividing by ``max(count, 1)`` is
    exact."""
    pet_factor = pet_schedule(step, total)
    counts = counts.to(next(iter(sums.values())).device)
    values = [sums[name] / counts[i].clamp_min(1.0).to(sums[name].dtype) for i, name in enumerate(PARTS)]
    total_loss = sum(v * (weights[n] * (pet_factor if n == "pet" else 1.0)) for v, n in zip(values, PARTS))
    parts = torch.stack([v.detach().double() for v in values])
    return total_loss, torch.where(counts > 0, parts, torch.full_like(parts, float("nan")))
