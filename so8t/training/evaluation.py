"""Figures on held-out data and the safety head's calibration, for a training :class:`Session`.

``evaluate``: LM loss / perplexity and the safety figures (so8t.training.metrics) on the eval set.
``calibrate``: the head's operating point on the calibration set, folded into the head
(so8t.training.calibration). Both run without gradients, batch by batch, on every rank alike.
"""

from __future__ import annotations

import torch

from so8t.training.batching import sequential_batches
from so8t.training.calibration import choose_offset, fold_offset
from so8t.training.losses import loss_sums
from so8t.training.metrics import confusion_matrix, lm_metrics, safety_metrics
from so8t.training.session import Session


def head_trained(session: Session) -> bool:
    o = session.options
    labelled = any(e.label is not None for e in session.train.examples)
    return o.steps > 0 and o.safety_weight > 0 and labelled


def _passes(session: Session, data, need_lm: bool):
    """(loss sums, labels of the labelled rows, their head logits) per eval batch of ``data``, no grad."""
    with torch.no_grad():
        for batch in sequential_batches(data.examples, session.options.eval_batch_size, session.pad_id):
            out = loss_sums(session.model, batch.to(session.world.device), need_lm=need_lm)
            keep = out.labels >= 0
            labelled = out.safety_logits is not None and bool(keep.any())
            yield (out, out.labels[keep].cpu() if labelled else None,
                   out.safety_logits[keep].double().cpu() if labelled else None)


def evaluate(session: Session) -> dict:
    """LM loss / perplexity and safety figures on the eval set (every rank computes it alike)."""
    lm_sum, tokens, labels, preds = 0.0, 0, [], []
    for out, y, logits in _passes(session, session.eval, need_lm=True):
        lm_sum += float(out.sums["lm"])
        tokens += int(out.counts[0])
        if y is not None:
            labels.append(y)
            preds.append(logits.argmax(-1))
    metrics = lm_metrics(lm_sum, tokens)
    metrics["safety"] = (
        safety_metrics(confusion_matrix(torch.cat(labels), torch.cat(preds))) if labels else None
    )
    return metrics


def calibrate(session: Session) -> dict | None:
    """Choose the head's operating point on the calibration set and fold it into the head
    (so8t.training.calibration); returns the record for the training record and the metrics file."""
    data = session.calibration
    if data is None or session.model.safety_head is None or not head_trained(session):
        return None
    passes = [(y, logits) for _, y, logits in _passes(session, data, need_lm=False)]
    result = choose_offset(torch.cat([logits for _, logits in passes]), torch.cat([y for y, _ in passes]),
                           session.options.min_refuse_recall)
    fold_offset(session.model.safety_head, result.offset)
    return result.record(data.path.name, data.sha256, session.options.min_refuse_recall)
