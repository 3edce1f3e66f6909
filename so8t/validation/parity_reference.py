"""The reference side of the parity checks of one run: shared by every file validated against one checkpoint.

One :class:`ParityReference` per (SO8T checkpoint, run): the pipeline creates one and hands it to the
validator of each exported file, so the streamed float64 reference (:mod:`so8t.reference`) runs once per
token-id set and variant, never once per file.

Note [eps]: the llama.cpp in llama-cpp-python 0.3.36 ignores ``qwen2vl.attention.layer_norm_rms_epsilon``
and normalises with eps = 0 (docs/reference.md section 5). The first request computes the SO8T model with
eps = 0 and with the checkpoint's eps in ONE pass (two variants share the weight stream) and uses eps = 0
unless llama.cpp's logits of a *float* file are decisively closer to the file's eps: the per-position KL
difference must favour it by more than ``EPS_Z`` standard errors. A block-type file cannot tell: its
quantization noise interacts with the eps (measured: a Q4_K_M file of the embedded model "prefers" the
file's eps by more than 3 standard errors while its F16 sibling matches eps = 0 exactly), so when the first
file of a run is a block type the known behaviour stands. The choice holds for the rest of the run, the plain baseline model
included; the day llama.cpp reads the key, a float file shows it decisively (and the parity suite's
strict-xfail canary turns red).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from so8t.gguf.parity import per_position_kl
from so8t.reference import ReferenceOutput, StreamedReference, Variant

#: Standard errors by which the file's eps must fit llama.cpp better than eps = 0 to be chosen.
EPS_Z = 3.0
EPS0_LABEL = "eps=0, as the llama.cpp of llama-cpp-python 0.3.36 runs it (it ignores the file's rms eps)"


class ParityReference:
    """Reference logits for the parity checks of one run (see the module docstring).

    Args:
        so8t_dir: the SO8T checkpoint the files were exported from.
    """

    def __init__(self, so8t_dir: str | Path):
        self.reference = StreamedReference(so8t_dir)
        self.eps: float | None = None
        self.eps_label = ""

    @property
    def identity_gates(self) -> bool:
        return self.reference.identity_gates

    def so8t(self, seqs: Sequence[Sequence[int]], llama_logits: np.ndarray, float_file: bool) -> ReferenceOutput:
        """The SO8T model at ``seqs``; the first call chooses the eps (Note [eps]; only a ``float_file`` can
        move it off eps = 0)."""
        if self.eps is None and not float_file:
            self.eps, self.eps_label = 0.0, EPS0_LABEL + "; a block-type file cannot show otherwise"
        if self.eps is None:
            file_eps = float(self.reference.config["rms_norm_eps"])
            candidates = {0.0: Variant(eps=0.0), file_eps: Variant(eps=file_eps)}
            outs = self.reference.run(seqs, list(candidates.values()))
            self.eps = 0.0
            if file_eps != 0.0:
                diff = (per_position_kl(llama_logits, outs[candidates[0.0]].logits)
                        - per_position_kl(llama_logits, outs[candidates[file_eps]].logits))
                se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
                if diff.mean() > EPS_Z * se:
                    self.eps = file_eps
            for eps, variant in candidates.items():
                if eps != self.eps:
                    self.reference.forget(seqs, variant)  # never asked for again in this run
            self.eps_label = EPS0_LABEL if self.eps == 0.0 else f"eps={self.eps:g}, the file's"
        return self.reference.run(seqs, [Variant(eps=self.eps)])[Variant(eps=self.eps)]

    def plain(self, seqs: Sequence[Sequence[int]]) -> ReferenceOutput:
        """The plain source model (no gates) at ``seqs``, with the eps chosen by :meth:`so8t`."""
        if self.eps is None:
            raise RuntimeError("ParityReference.plain before ParityReference.so8t chose the eps")
        variant = Variant(gates=False, eps=self.eps)
        return self.reference.run(seqs, [variant])[variant]
