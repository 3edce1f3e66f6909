"""Parity: llama.cpp's logits on the probe prompts against the streamed float64 PyTorch reference.

``parity.logits`` (needs ``--so8t-model``) scores every position of every probe prompt
(so8t/validation/probes.py; at least ``MIN_POSITIONS`` in all) in the terms of ``llama-perplexity
--kl-divergence``: mean KL with its standard error, median, p99 and max KL, and "same top p" (top-1
agreement). The reference is :class:`so8t.validation.parity_reference.ParityReference` (one per run; eps
chosen once, see its Note [eps]). Bounds live in ``so8t.gguf.parity``, shared with the parity suite:

* float types (F32, F16, BF16): max |logit error| within the derived rounding bound ``float_bound``, and
  llama.cpp's argmax equal wherever the reference's top-1 margin exceeds twice that bound;
* block types: the file against llama.cpp's quantization of the **same SO8T function**
  (``relative_verdict``: mean-KL ratio <= ``KL_RATIO_MAX``, top-1 no lower than the baseline's by more
  than ``top1_margin``), the worst of up to ``BASELINE_REALIZATIONS`` realizations, built only while the
  file still fails (so8t/validation/baseline.py, function ``"so8t"``). Beside the verdict, as information,
  what the type costs the plain source model (``"plain"`` realization 0, scored against the plain
  reference) and the ratio: how much more sensitive to rounding the gates made the network
  (``so8t.gguf.parity.sensitivity_warning``). With identity gates the file is its own baseline for both.

The check's ``details`` hold both sides' statistics, the ratio and the quantization cost, for the report.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from gguf import LlamaFileType

from so8t.gguf.parity import (
    BASELINE_REALIZATIONS,
    FLOAT_UNIT_ROUNDOFF,
    KL_RATIO_MAX,
    compare_logits,
    decided,
    float_bound,
    kl_ratio,
    parity_name,
    relative_verdict,
    sensitivity_warning,
    top1_margin,
    worst_of,
)
from so8t.validation.context import Context, check, expect, passed, skipped
from so8t.validation.probes import MIN_POSITIONS

NO_MODEL = "no --so8t-model given: logit parity against PyTorch did not run"


def _stats_line(st: dict) -> str:
    return (f"mean KL {st['mean_kl']:.3e} +- {st['mean_kl_se']:.1e} (median {st['median_kl']:.2e}, p99 "
            f"{st['p99_kl']:.2e}), same top p {st['top1']:.3f}")


def _reference(ctx: Context):
    if ctx.reference is None:
        from so8t.validation.parity_reference import ParityReference

        ctx.reference = ParityReference(ctx.so8t_model)
    return ctx.reference


@check("parity.logits", "parity", requires=("runtime.llama_load",))
def logits_parity(ctx: Context):
    if ctx.so8t_model is None:
        return skipped(NO_MODEL)
    probe = ctx.cache["probe"]
    file_type = LlamaFileType(ctx.value("general.file_type"))
    quant = parity_name(file_type)
    if quant is None:
        return skipped(f"no parity bound for file type {file_type.name}")
    logits, seqs = probe["logits"], probe["ids"]
    if logits.shape[0] < MIN_POSITIONS:
        raise RuntimeError(f"the probe prompts gave {logits.shape[0]} positions, fewer than the {MIN_POSITIONS} "
                           "a verdict needs (a tokenizer other than Qwen2's?)")
    ref = _reference(ctx)
    ref_logits = ref.so8t(seqs, logits, float_file=quant in FLOAT_UNIT_ROUNDOFF).logits
    ours = compare_logits(logits, ref_logits)
    head = f"{quant} vs PyTorch ({ref.eps_label}), {len(seqs)} prompts, {ours['n']} positions"
    ctx.details = {"quant": quant, "eps": ref.eps, "ours": ours}
    if quant in FLOAT_UNIT_ROUNDOFF:
        return _float_verdict(ctx, quant, head, ours, ref_logits, logits)
    return _block_verdict(ctx, quant, head, ours, ref, seqs, ref_logits)


def _float_verdict(ctx: Context, quant: str, head: str, ours: dict, ref_logits, logits):
    bound = float_bound(quant, ref_logits, int(ctx.value("qwen2vl.block_count")),
                        max(int(ctx.value("qwen2vl.embedding_length")), int(ctx.value("qwen2vl.feed_forward_length"))))
    summary = f"{head}: max|dlogit| {ours['max_abs']:.2e}, {_stats_line(ours)}"
    expect(ours["max_abs"] <= bound, f"{summary}: max|dlogit| above the rounding bound {bound:.2e}",
           measured=ours["max_abs"], bound=bound)
    sure = decided(ref_logits, bound)
    agree = logits.argmax(-1)[sure] == ref_logits.argmax(-1)[sure]
    expect(bool(agree.all()), f"{summary}: argmax differs at {int((~agree).sum())} positions whose top-1 "
           f"margin exceeds twice the bound", measured=int((~agree).sum()), bound=0)
    return passed(summary + f" (bound {bound:.2e}; argmax equal at all {int(sure.sum())} decided positions)",
                  measured=ours["max_abs"], bound=bound)


def _block_verdict(ctx: Context, quant: str, head: str, ours: dict, ref, seqs, ref_logits):
    if ref.identity_gates:
        base = plain = ours
        what = "identity gates: the file is llama.cpp's own quantization of the source, its own baseline"
        realizations = [ours]
    else:
        realizations = _baseline_realizations(ctx, ours, ref, seqs, ref_logits)
        base = worst_of(realizations)
        what = (f"baseline: llama.cpp's {quant} of the same SO8T weights, worst of {len(realizations)} "
                "realization(s) (mean KL " + ", ".join(f"{r['mean_kl']:.3e}" for r in realizations) + ")")
        plain = _plain_cost(ctx, ref, seqs)
    ratio = kl_ratio(ours, base)
    margin = top1_margin(ours["top1"], base["top1"], ours["n"])
    cost = {"so8t_mean_kl": ours["mean_kl"], "plain_mean_kl": plain["mean_kl"], "ratio": kl_ratio(ours, plain),
            "plain": plain}
    warning = sensitivity_warning(quant, cost["ratio"])
    ctx.details.update(baseline=base, baseline_realizations=realizations, kl_ratio=ratio,
                       kl_ratio_max=KL_RATIO_MAX, top1_margin=margin, quantization_cost=cost)
    if warning:
        ctx.details["warning"] = warning
    summary = (f"{head}: ours {_stats_line(ours)}; {what}: {_stats_line(base)}; KL ratio {ratio:.3f} "
               f"(<= {KL_RATIO_MAX}), top-1 margin {margin:.3f}; quantization cost {cost['ratio']:.2f}x the "
               f"plain source model's ({plain['mean_kl']:.3e})")
    problems = relative_verdict(ours, base)
    expect(not problems, f"{summary}: " + "; ".join(problems), measured=ratio, bound=KL_RATIO_MAX)
    return passed(summary, measured=ratio, bound=KL_RATIO_MAX)


def _score_baseline(ctx: Context, ref, seqs, tmp: str, function: str, realization: int, against) -> dict:
    from so8t.validation.baseline import build_baseline
    from so8t.validation.checks_runtime import run_text_probe

    path = Path(tmp, f"baseline-{function}-{realization}.gguf")
    from so8t.imatrix.file import imatrix_of

    build_baseline(ctx.gguf_path, ref.reference.checkpoint, path, realization=realization,
                   tensors=ctx.reader.tensors, function=function, imatrix=imatrix_of(ctx.gguf_path, ctx.reader))
    try:
        probe = run_text_probe(path, tmp, ids=seqs)
    finally:
        path.unlink()
    return compare_logits(probe["logits"], against)


def _baseline_realizations(ctx: Context, ours: dict, ref, seqs, ref_logits) -> list[dict]:
    """Score realizations 1, 2, ... of the SO8T-function baseline (so8t/validation/baseline.py) on ``seqs``
    until the file passes against the worst of them or ``BASELINE_REALIZATIONS`` are scored (the file
    itself is realization 0 of an honest export; so8t.gguf.parity docstring)."""
    realizations: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="so8t-baseline-") as tmp:
        while len(realizations) < BASELINE_REALIZATIONS and (
                not realizations or relative_verdict(ours, worst_of(realizations))):
            realizations.append(_score_baseline(ctx, ref, seqs, tmp, "so8t", len(realizations) + 1, ref_logits))
    return realizations


def _plain_cost(ctx: Context, ref, seqs) -> dict:
    """What this type costs the plain source model: llama.cpp's own quantization of it (realization 0 of
    the ``plain`` baseline) against the plain float64 reference."""
    with tempfile.TemporaryDirectory(prefix="so8t-baseline-") as tmp:
        return _score_baseline(ctx, ref, seqs, tmp, "plain", 0, ref.plain(seqs).logits)
