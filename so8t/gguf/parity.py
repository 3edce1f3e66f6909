"""Logit parity between llama.cpp and the PyTorch SO8T model: the error bounds, in one place.

Shared by the parity suite (suites/test_llama_parity.py) and the validator's ``parity.logits`` check
(so8t/validate/checks_runtime.py). Types are keyed by their ``so8t.gguf.quant.QUANT_TYPES`` name ("F16",
"Q4_K_M"); :func:`parity_name` maps a file's ``general.file_type`` to it.

Float bounds (max |logit error|), from the unit roundoff u of the stored type: a logit is the end of a
chain of C = 4 * n_layers + 1 matrix products (q/k/v and o_proj per attention, up/gate and down per MLP,
the output); each product of length K adds a relative error of about sqrt(K) * u for float32 arithmetic
(random-sign rounding) and about u for weights rounded to u. So
    F32 (f32 weights, f32 math, F32 KV cache): C * sqrt(K_max) * 2^-24 * S
    F16 / BF16 weights:                          C * u * S + the F32 bound,  u = 2^-11 / 2^-8
with S = max |reference logit| and K_max = max(hidden size, FFN size) (:func:`float_bound`). Where the
reference's top-1 margin exceeds twice the bound, llama.cpp's argmax must agree (:func:`decided`).

Quantized types: no such bound exists for the whole network, so top-1 agreement and KL(reference ||
llama.cpp) are held to thresholds measured on the embedded model (61 positions, random gates, seed
``RANDOM_SEED`` of suites/fixtures/conversions.py; measured with ``type_k = type_v = F32``, figures
below). The tiny random model has nearly flat logits (median top-1/top-2 gap 0.058), so top-1 is fragile;
KL grows with the square of the weight step (Q8_0 -> Q4 steps are ~16x coarser: KL ~128x measured).
Thresholds leave 4-5x headroom on KL and ~0.1-0.15 on top-1 over the measurements:

    type     measured top-1 / KL mean    threshold top-1 >= / KL mean <=
    Q8_0     0.951 / 1.6e-5              0.85 / 1e-4
    Q6_K     0.836 / 1.2e-4              0.70 / 6e-4
    Q5_K_M   0.836 / 3.0e-4              0.65 / 1.5e-3
    Q5_K_S   0.869 / 3.1e-4              0.65 / 1.5e-3
    Q4_K_M   0.836 / 1.4e-3              0.55 / 6e-3
    Q4_K_S   0.754 / 9.5e-4              0.55 / 6e-3
    Q4_0     0.508 / 2.1e-3              0.35 / 1e-2

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
#: Block types: (min top-1 agreement, max mean KL(reference || llama.cpp)), see the module docstring.
QUANT_THRESHOLDS = {
    "Q8_0": (0.85, 1e-4),
    "Q6_K": (0.70, 6e-4),
    "Q5_K_M": (0.65, 1.5e-3),
    "Q5_K_S": (0.65, 1.5e-3),
    "Q4_K_M": (0.55, 6e-3),
    "Q4_K_S": (0.55, 6e-3),
    "Q4_0": (0.35, 1e-2),
}
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


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def compare_logits(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Statistics of llama.cpp's logits ``got`` against the reference ``ref`` over all positions:
    ``max_abs`` (max |got - ref|), ``top1`` (fraction of equal argmax), ``mean_kl`` and ``max_kl`` of
    KL(softmax(ref) || softmax(got)) per position."""
    a, b = got.astype(np.float64), ref.astype(np.float64)
    lp, lq = _log_softmax(b), _log_softmax(a)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    return {
        "max_abs": float(np.abs(a - b).max()),
        "top1": float((a.argmax(-1) == b.argmax(-1)).mean()),
        "mean_kl": float(kl.mean()),
        "max_kl": float(kl.max()),
    }
