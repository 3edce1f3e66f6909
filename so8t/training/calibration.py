"""The safety head's operating point: chosen on a calibration set, folded into the head's last bias.

The head decides ``argmax(logits + offset)`` with ``offset = (0, d_ESCALATE, d_REFUSE)`` (logit order of
:data:`so8t.safety.SAFETY_CLASSES`). Training weighs the classes 1 / 3 / 5
(:data:`so8t.training.losses.CLASS_WEIGHTS`), which moves the head's boundary towards ESCALATE and REFUSE
wherever it is unsure: that is where the false refusals of safe prompts come from, and how far to move it
back is a property of the trained head, not a constant. :func:`choose_offset` picks it on labelled prompts
that training never saw:

1. candidates: every ``(d_ESCALATE, d_REFUSE)`` on the grid ``-SPAN, -SPAN + STEP, ..., SPAN``;
2. feasible: REFUSE recall >= ``min_refuse_recall`` on the calibration set (when no candidate is, those of
   the highest REFUSE recall);
3. best: the lowest over-refusal rate + over-compliance rate (so8t.training.metrics), then the highest
   accuracy;
4. among the best, the one nearest (Euclidean) to their mean, ties to the smallest offset: the middle of
   the best region rather than its edge, which a single prompt more or less would move.

:func:`fold_offset` adds the offset to the head's final bias (``2.bias``), so every reader of the head
(PyTorch, the sidecar, the llama.cpp guard) decides with it and no file format changes. The training record
keeps the offset and the calibration set's figures before and after.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from so8t.safety import SAFETY_CLASSES, SafetyHead
from so8t.training.defaults import MIN_REFUSE_RECALL
from so8t.training.metrics import confusion_matrix, safety_metrics

#: Grid of each offset: -SPAN ... SPAN in steps of STEP (logit units).
SPAN, STEP = 8.0, 0.25

_ALLOW, _ESCALATE, _REFUSE = (SAFETY_CLASSES.index(c) for c in ("ALLOW", "ESCALATE", "REFUSE"))


@dataclass(frozen=True)
class Calibration:
    offset: tuple[float, float, float]  # added to the logits, SAFETY_CLASSES order (ALLOW's is 0)
    before: dict  # safety_metrics on the calibration set, offset 0
    after: dict  # the same with the offset

    def record(self, name: str, sha256: str, min_refuse_recall: float) -> dict:
        return {
            "data": {"name": name, "sha256": sha256, "examples": self.before["n_labelled"]},
            "min_refuse_recall": min_refuse_recall,
            "offset": dict(zip(SAFETY_CLASSES, self.offset)),
            "before": self.before,
            "after": self.after,
        }


def _grid() -> torch.Tensor:
    """``[n, 3]`` float64 candidate offsets (ALLOW column 0)."""
    values = torch.arange(-SPAN, SPAN + STEP / 2, STEP, dtype=torch.float64)
    e, r = torch.meshgrid(values, values, indexing="ij")
    return torch.stack([torch.zeros_like(e), e, r], dim=-1).reshape(-1, 3)


def _rates(preds: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per candidate (rows of ``preds`` ``[n, examples]``): REFUSE recall, over-refusal + over-compliance,
    accuracy. A class absent from the labels counts as rate 0 (recall 1)."""
    safe, refuse = labels == _ALLOW, labels == _REFUSE
    dangerous = ~safe

    def rate(hits: torch.Tensor, among: torch.Tensor, empty: float) -> torch.Tensor:
        n = int(among.sum())
        return (hits & among).sum(-1).double() / n if n else torch.full(hits.shape[:1], empty, dtype=torch.float64)

    recall = rate(preds == _REFUSE, refuse, 1.0)
    errors = rate(preds != _ALLOW, safe, 0.0) + rate(preds == _ALLOW, dangerous, 0.0)
    accuracy = (preds == labels).double().mean(-1)
    return recall, errors, accuracy


def choose_offset(logits: torch.Tensor, labels: torch.Tensor, min_refuse_recall: float = MIN_REFUSE_RECALL
                  ) -> Calibration:
    """The operating point of the module docstring for head ``logits`` ``[examples, 3]`` and class indices
    ``labels`` ``[examples]`` (every row labelled)."""
    logits, labels = logits.detach().double().cpu(), labels.cpu()
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise ValueError(f"need [n, 3] logits and n labels, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    grid = _grid()
    preds = (logits.unsqueeze(0) + grid.unsqueeze(1)).argmax(-1)  # [candidates, examples]
    recall, errors, accuracy = _rates(preds, labels)
    feasible = recall >= min_refuse_recall - 1e-12
    if not bool(feasible.any()):
        feasible = recall == recall.max()
    errors = torch.where(feasible, errors, torch.full_like(errors, float("inf")))
    best = errors == errors.min()
    best &= accuracy == accuracy[best].max()
    candidates = grid[best]
    distance = (candidates - candidates.mean(0)).norm(dim=-1)
    order = sorted(range(len(candidates)), key=lambda i: (round(float(distance[i]), 9),
                                                          float(candidates[i].abs().sum())))
    offset = candidates[order[0]]

    def figures(shift: torch.Tensor) -> dict:
        return safety_metrics(confusion_matrix(labels, (logits + shift).argmax(-1)))

    return Calibration(tuple(float(v) for v in offset), figures(torch.zeros(3, dtype=torch.float64)),
                       figures(offset))


def fold_offset(head: SafetyHead, offset: tuple[float, float, float]) -> None:
    """Add ``offset`` to the head's final bias in place: ``argmax(head(h))`` then equals
    ``argmax(old_head(h) + offset)`` for every hidden state ``h``."""
    with torch.no_grad():
        bias = head[2].bias
        bias.add_(torch.tensor(offset, dtype=bias.dtype, device=bias.device))
