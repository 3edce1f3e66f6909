"""Logit parity between llama.cpp and the PyTorch SO8T model: the error bounds, in one place.

Shared by the parity suite (suites/test_llama_parity.py) and the validator's ``parity.logits`` check
(so8t/validation/checks_parity.py). Types are keyed by their ``so8t.gguf.quant.QUANT_TYPES`` name ("F16",
"Q4_K_M"); :func:`parity_name` maps a file's ``general.file_type`` to it.

Float bounds (max |logit error|), from the unit roundoff u of the stored type: a logit is the end of a
chain of C = 4 * n_layers + 1 matrix products (q/k/v and o_proj per attention, up/gate and down per MLP,
the output); each product of length K adds a relative error of about sqrt(K) * u for float32 arithmetic
(random-sign rounding) and about u for weights rounded to u. So
    F32 (f32 weights, f32 math, F32 KV cache): C * sqrt(K_max) * 2^-24 * S
    F16 / BF16 weights:                          C * u * S + the F32 bound,  u = 2^-11 / 2^-8
with S = max |reference logit| and K_max = max(hidden size, FFN size) (:func:`float_bound`). Where the
reference's top-1 margin exceeds twice the bound, llama.cpp's argmax must agree (:func:`decided`).

Block types (Q8_0, Q4_0, K-quants): no such bound exists for the whole network, and any absolute
threshold on KL or top-1 agreement is a number read off one model (a random model has nearly flat
logits; a 28-layer model accumulates more error than a 2-layer one). A block-type file is therefore
judged *relative to llama.cpp's own quantization of the same SO8T function* on the same token ids
(docs/reference.md section 8; so8t/validation/baseline.py): ``ours`` = KL(reference of the SO8T model ||
llama.cpp on our file), ``base`` = KL(the same reference || llama.cpp on a baseline file whose gate-site
tensors are llama.cpp's quantization of the same folded weights, rounded differently). Comparing with the
quantization of the *plain* source model instead would judge the gates, not the file: on real weights
random gates make the network about 15x more sensitive to rounding, and Q8_0 then costs hundreds of times
the plain model's KL although the file is exactly what llama.cpp writes for those weights.
:func:`relative_verdict` passes when

* mean KL: ``ours <= KL_RATIO_MAX * base`` (1.25: our file may cost at most 25% more than llama.cpp's
  own quantization of the same weights), and
* top-1 agreement ("same top p"): ``ours >= base - top1_margin``, with the margin derived from the
  number of positions n (:func:`top1_margin`): ``TOP1_Z`` standard errors of the difference of two
  proportions, ``z * sqrt((p_o (1 - p_o) + p_b (1 - p_b)) / n)``, plus ``1/n`` for the discreteness of a
  count. Positions of one prompt are not independent, and the two files are scored on the same
  positions (positively correlated): the unpaired variance overstates the paired one, so the margin is
  conservative. z = 3 puts a false FAIL of an equally good file below ~0.2% per check.

An honest file is one draw of rounding error, and so is each baseline: on a small model (few gate-site
blocks) another, equally legitimate quantization of the same function moves its KL by tens of percent
(measured on the 2-layer embedded model: 1.15e-5 to 1.37e-5 over six realizations at Q8_0). The file and
the realizations (function-preserving permutations, so8t/validation/baseline.py) are exchangeable draws,
so the baseline is the *worst of up to* ``BASELINE_REALIZATIONS`` realizations (:func:`worst_of`: largest
mean KL, lowest top-1), built only while the file still fails, since one more realization can only raise
the allowance (so stopping at the first PASS gives the verdict all of them would give). A file whose
bytes hold something else (a wrong fold, a damaged block) is not such a draw; the per-tensor value
bounds (``tensors.values_vs_source``) and the content hash catch most of those before parity runs.

Information, not verdict: what the type costs the SO8T model against what it costs the plain source model
(``ratio`` = ours / llama.cpp's quantization of the source scored against the plain reference).
:func:`sensitivity_warning` words a warning when that ratio passes ``SENSITIVITY_WARN`` (2.0, a reporting
convention: twice the KL the source model pays for the same type).

Logits are ``[positions, vocab]`` arrays; statistics are computed in float64.
"""

from __future__ import annotations

import math

import numpy as np
from gguf import LlamaFileType

from so8t.gguf.quant import QUANT_TYPES

#: Unit roundoff of the stored weights of the float types (F32 weights are exact to the float32
#: arithmetic bound, which :func:`float_bound` adds for every type).
FLOAT_UNIT_ROUNDOFF = {"F32": 0.0, "F16": 2.0**-11, "BF16": 2.0**-8}
#: Block types may cost at most this factor of the mean KL of llama.cpp's own quantization of the same
#: SO8T weights (see above).
KL_RATIO_MAX = 1.25
#: Baseline realizations (permuted re-encodings of the same SO8T weights) a block-type file is judged
#: against, at most.
BASELINE_REALIZATIONS = 4
#: Quantization-cost ratio (SO8T model / plain source model) above which the report warns (module docstring).
SENSITIVITY_WARN = 2.0
#: Standard errors of the top-1 agreement difference tolerated (see :func:`top1_margin`).
TOP1_Z = 3.0
#: Unit roundoff of float32 arithmetic.
F32_ROUNDOFF = 2.0**-24


def parity_name(file_type: int | LlamaFileType) -> str | None:
    """The ``QUANT_TYPES`` name of a ``general.file_type`` value; None for a file type we do not export."""
    return next((q.name for q in QUANT_TYPES.values() if q.file_type == file_type), None)


def float_bound(quant: str, ref_logits: np.ndarray, n_layers: int, k_max: int) -> float:
    """Bound on max |logit error| of float type ``quant`` ("F32", "F16", "BF16"):
    ``C * sqrt(k_max) * 2^-24 * S + C * u * S`` with ``C = 4 n_layers + 1``, ``S = max |ref_logits|`` and
    ``k_max`` the longest dot product (max of hidden and FFN sizes); see the module docstring."""
    chain = 4 * n_layers + 1
    scale = float(np.abs(ref_logits).max())
    return chain * math.sqrt(k_max) * F32_ROUNDOFF * scale + chain * FLOAT_UNIT_ROUNDOFF[quant] * scale


def decided(ref_logits: np.ndarray, bound: float) -> np.ndarray:
    """Boolean mask of the positions whose reference top-1/top-2 margin exceeds ``2 * bound``: there a
    logit error within ``bound`` cannot change the argmax."""
    top2 = np.sort(ref_logits, axis=-1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > 2 * bound


def compare_logits(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Statistics of llama.cpp's logits ``got`` against the reference ``ref`` (``[positions, vocab]``), in
    the terms of ``llama-perplexity --kl-divergence``: per-position KL(softmax(ref) || softmax(got)) as
    ``mean_kl`` with its standard error ``mean_kl_se``, ``median_kl``, ``p99_kl``, ``max_kl``; ``top1``
    ("same top p": fraction of positions with equal argmax) with ``top1_se``; ``max_abs`` (max |got - ref|);
    ``n`` positions."""
    kl, same, max_abs = _per_position(got, ref)
    n = kl.size
    return {
        "n": int(n),
        "max_abs": max_abs,
        "top1": float(same.mean()),
        "top1_se": float(same.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        "mean_kl": float(kl.mean()),
        "mean_kl_se": float(kl.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        "median_kl": float(np.median(kl)),
        "p99_kl": float(np.percentile(kl, 99)),
        "max_kl": float(kl.max()),
    }


def per_position_kl(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """KL(softmax(ref) || softmax(got)) at each position (float64)."""
    return _per_position(got, ref)[0]


def _per_position(got: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(KL per position, argmax agreement per position, max |got - ref|), 16 positions at a time so the
    float64 temporaries stay ~20 MB each; torch's vectorised exp/log is ~20x numpy's here."""
    import torch

    if got.shape != ref.shape:
        raise ValueError(f"logit shapes differ: {got.shape} vs {ref.shape}")
    kl, same, max_abs = [], [], 0.0
    for start in range(0, got.shape[0], 16):
        a = torch.from_numpy(np.asarray(got[start : start + 16])).to(torch.float64)
        b = torch.from_numpy(np.asarray(ref[start : start + 16])).to(torch.float64)
        lp, lq = torch.log_softmax(b, dim=-1), torch.log_softmax(a, dim=-1)
        kl.append((lp.exp() * (lp - lq)).sum(dim=-1).clamp_min(0.0).numpy())  # >= 0 up to rounding
        same.append((a.argmax(-1) == b.argmax(-1)).numpy())
        max_abs = max(max_abs, float((a - b).abs().max()))
    return np.concatenate(kl), np.concatenate(same).astype(np.float64), max_abs


def top1_margin(p_ours: float, p_base: float, n: int, z: float = TOP1_Z) -> float:
    """Tolerated drop of top-1 agreement below the baseline's on ``n`` positions (module docstring)."""
    return z * math.sqrt((p_ours * (1 - p_ours) + p_base * (1 - p_base)) / n) + 1.0 / n


def relative_verdict(ours: dict[str, float], base: dict[str, float]) -> list[str]:
    """Why a block-type file fails against llama.cpp's quantization of the plain model (empty: it passes).
    ``ours`` and ``base`` are :func:`compare_logits` results on the same positions."""
    problems = []
    if ours["mean_kl"] > KL_RATIO_MAX * base["mean_kl"]:
        ratio = ours["mean_kl"] / base["mean_kl"] if base["mean_kl"] > 0 else math.inf
        problems.append(f"mean KL {ours['mean_kl']:.3e} is {ratio:.2f}x the baseline's {base['mean_kl']:.3e} "
                        f"(allowed {KL_RATIO_MAX}x)")
    margin = top1_margin(ours["top1"], base["top1"], min(ours["n"], base["n"]))
    if ours["top1"] < base["top1"] - margin:
        problems.append(f"top-1 agreement {ours['top1']:.3f} is below the baseline's {base['top1']:.3f} by more "
                        f"than the margin {margin:.3f} ({ours['n']} positions)")
    return problems


def worst_of(bases: list[dict[str, float]]) -> dict[str, float]:
    """The baseline side of the verdict over several realizations (:func:`compare_logits` results on the
    same positions): the largest mean KL and the lowest top-1 agreement, each from its own realization."""
    worst_kl = max(bases, key=lambda b: b["mean_kl"])
    worst_top1 = min(bases, key=lambda b: b["top1"])
    return {**worst_kl, "top1": worst_top1["top1"], "top1_se": worst_top1["top1_se"]}


def kl_ratio(ours: dict[str, float], base: dict[str, float]) -> float:
    """``ours / base`` mean KL (1.0 when both are 0, inf when only the baseline is 0)."""
    if base["mean_kl"] == 0:
        return 1.0 if ours["mean_kl"] == 0 else math.inf
    return ours["mean_kl"] / base["mean_kl"]


def sensitivity_warning(quant: str, ratio: float) -> str | None:
    """One line when type ``quant`` costs the SO8T model more than ``SENSITIVITY_WARN`` times what it costs
    the plain source model (``ratio``), else None. Information about the model, never a verdict."""
    if not ratio > SENSITIVITY_WARN:
        return None
    return (f"{quant} costs this SO8T model {ratio:.3g}x the KL it costs the plain source model: the gates "
            "make it more sensitive to rounding")
