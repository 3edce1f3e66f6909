"""What the guard learns: the safety head trained and calibrated on the guard set, judged on held-out prompts.

The benchmarked checkpoint is converted with a safety head and identity gates, then ``so8t.train`` runs
(the timed operation, once: ``rounds=1``) on ``so8t/data/guard_safety_train.jsonl`` with the held-out split
``guard_safety_heldout.jsonl`` as eval data and ``guard_safety_eval.jsonl`` as the calibration set that picks
the head's operating point (so8t.training.calibration). Steps: ``--so8t-bench-guard-steps`` (default 60, 10 on
the embedded model; benchmarks/conftest.py), batch 8, torch threads ``--so8t-bench-threads``, the other
training options at their defaults (seed 0).

Recorded (``extra_info``; fractions 0..1, so8t.training.metrics on the held-out prompts after calibration):
``refuse_recall``, ``escalate_recall``, ``over_refusal_rate``, ``over_compliance_rate``, ``accuracy``,
``majority_baseline``, per class ``precision_<CLASS>`` (null when the head never predicts the class),
``recall_<CLASS>`` and ``support_<CLASS>``, ``classes``; the calibration offset added to each class's logit
``calibration_offset_<CLASS>``; ``<key>_ci95_low`` and ``<key>_ci95_high`` for ``refuse_recall``,
``over_refusal_rate`` and ``over_compliance_rate`` (their 95% Wilson intervals); ``steps``, ``batch_size``,
``train_s`` (the whole ``so8t.train`` call: steps, calibration, evaluation, writing the checkpoint),
``train_tokens`` and ``train_tokens_per_s`` (training tokens over ``train_s``). The dashboard shows them in
its "Safety guard" section and its regression check judges the recalls and the two rates; they are never
asserted here. On the embedded model (random weights) the figures only prove the plumbing; on real weights
they are the guard's quality: ``--so8t-model ~/.cache/so8t/qwen2vl-real-0.5b-<hash>``.
"""

from __future__ import annotations

import json

GUARD_BATCH = 8


def test_guard_quality(benchmark, bench, bench_model, scratch):
    import so8t
    from so8t.conversion import Qwen2VLToSO8TConverter
    from so8t.data import GUARD_EVAL, GUARD_HELDOUT, GUARD_TRAIN
    from so8t.safety import SAFETY_CLASSES

    steps = bench.guard_steps
    so8t_dir = Qwen2VLToSO8TConverter(bench.source, progress=False, safety_features=True).convert(scratch / "so8t")
    out = scratch / "trained"
    result = benchmark.pedantic(
        so8t.train, args=(so8t_dir, GUARD_TRAIN, out),
        kwargs={"eval_data": GUARD_HELDOUT, "safety_calibration_data": GUARD_EVAL, "steps": steps,
                "batch_size": GUARD_BATCH, "threads": bench.threads, "progress": False},
        rounds=1, iterations=1,
    )
    assert result.head_trained, f"the safety head did not train ({steps} steps)"
    safety = result.metrics["safety"]
    heldout = [json.loads(line) for line in GUARD_HELDOUT.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert sum(map(sum, safety["confusion"])) == safety["n_labelled"] == sum("label" in e for e in heldout)
    assert safety["classes"] == list(SAFETY_CLASSES)
    figures = {key: safety[key] for key in ("refuse_recall", "escalate_recall", "over_refusal_rate",
                                            "over_compliance_rate", "accuracy", "majority_baseline")}
    for name, c in safety["per_class"].items():
        figures |= {f"precision_{name}": c["precision"], f"recall_{name}": c["recall"]}
    assert all(value is not None for key, value in figures.items() if not key.startswith("precision_")), figures
    assert all(0 <= value <= 1 for value in figures.values() if value is not None), figures
    training = json.loads((out / "config.json").read_text())["so8t"]["training"]
    offset = training["calibration"]["offset"]
    assert list(offset) == list(SAFETY_CLASSES) and offset["ALLOW"] == 0
    benchmark.extra_info.update({
        "model": bench.model, "classes": list(SAFETY_CLASSES), "steps": steps, "batch_size": GUARD_BATCH,
        "threads": bench.threads,
        **{key: None if value is None else round(value, 4) for key, value in figures.items()},
        **{f"support_{name}": c["support"] for name, c in safety["per_class"].items()},
        **{f"calibration_offset_{name}": value for name, value in offset.items()},
        **{f"{key}_ci95_{end}": round(bound, 4) for key in ("refuse_recall", "over_refusal_rate", "over_compliance_rate")
           for end, bound in zip(("low", "high"), safety[f"{key}_ci95"])},
        # train_s: the whole call (loading and writing too); tokens/s: over the optimizer steps alone
        "train_s": round(result.seconds, 3), "train_steps_s": round(result.step_seconds, 3),
        "train_tokens": result.tokens, "train_tokens_per_s": round(result.tokens / result.step_seconds, 1),
    })
