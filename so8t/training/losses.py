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

from so8t.pet import pet_loss, pet_schedule
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


def valid_triples(mask: torch.Tensor) -> int:
    """Number of positions ``t`` with ``mask[t] = mask[t+1] = mask[t+2] = 1`` (PET's count)."""
    if mask.shape[1] < 3:
        return 0
    m = mask != 0
    return int((m[:, :-2] & m[:, 1:-1] & m[:, 2:]).sum())


def batch_counts(batch: Batch) -> torch.Tensor:
    """The counts of :class:`LossSums` from the batch alone (no forward pass needed)."""
    lm = int(batch.targets[:, 1:].sum())
    labelled = batch.labels[batch.labels >= 0]
    safety = float(class_weights()[labelled].double().sum()) if labelled.numel() else 0.0
    return torch.tensor([lm, safety, valid_triples(batch.attention_mask)], dtype=torch.float64)


def loss_sums(model, batch: Batch, need_lm: bool = True) -> LossSums:
    """Forward one batch and return every part's sum (``need_lm=False`` skips the LM head)."""
    hidden = final_hidden_states(model, batch)
    zero = hidden.sum() * 0.0
    sums = {"lm": zero.float(), "safety": zero.float(), "pet": zero.float()}
    select = batch.targets[:, 1:] != 0
    if need_lm and bool(select.any()):
        logits = model.qwen.lm_head(hidden[:, :-1][select]).float()
        sums["lm"] = F.cross_entropy(logits, batch.input_ids[:, 1:][select], reduction="sum")
    labelled = batch.labels >= 0
    safety_logits = None
    if model.safety_head is not None:
        safety_logits = model.safety_head.classify(hidden, batch.attention_mask).float()
        if bool(labelled.any()):
            y = batch.labels[labelled]
            ce = F.cross_entropy(safety_logits[labelled], y, reduction="none")
            sums["safety"] = (ce * class_weights(ce.device)[y]).sum()
    n_triples = valid_triples(batch.attention_mask)
    if n_triples:
        sums["pet"] = pet_loss(hidden, batch.attention_mask).float() * n_triples
    return LossSums(sums, batch_counts(batch), safety_logits, batch.labels)


def combine(
    sums: dict[str, torch.Tensor], counts: torch.Tensor, weights: dict[str, float], step: int, total: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted total loss and each normalised part (floats, unweighted; None without any count)."""
    pet_factor = pet_schedule(step, total)
    total_loss = None
    parts: dict[str, float] = {}
    for i, name in enumerate(PARTS):
        count = float(counts[i])
        value = sums[name] / count if count > 0 else sums[name] * 0.0
        parts[name] = float(value.detach()) if count > 0 else None
        weight = weights[name] * (pet_factor if name == "pet" else 1.0)
        term = value * weight
        total_loss = term if total_loss is None else total_loss + term
    parts["pet_factor"] = pet_factor
    return total_loss, parts
