"""The reference side of the parity checks of one run: shared by every file validated against one checkpoint.

One :class:`ParityReference` per (SO8T checkpoint, run): the pipeline creates one and hands it to the
validator of each exported file, so the streamed float64 reference (:mod:`so8t.reference`) runs once per
token-id set and variant, never once per file.

Note [eps]: the llama.cpp in llama-cpp-python 0.3.36 ignores ``qwen2vl.attention.layer_norm_rms_epsilon``
and normalises with eps = 0 (docs/reference.md section 5). The first request computes the SO8T model with
eps = 0 and with the checkpoint's eps in ONE pass (two variants share the weight stream), keeps the one
llama.cpp's logits are closer to (lower mean KL), and uses that eps for the rest of the run, the plain
baseline model included. So the bug is named in every report and the check keeps working the day
llama.cpp reads the key again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from so8t.gguf.parity import compare_logits
from so8t.reference import ReferenceOutput, StreamedReference, Variant

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

    def so8t(self, seqs: Sequence[Sequence[int]], llama_logits: np.ndarray) -> ReferenceOutput:
        """The SO8T model at ``seqs``; the first call chooses the eps llama.cpp matches (Note [eps])."""
        if self.eps is None:
            file_eps = float(self.reference.config["rms_norm_eps"])
            candidates = {0.0: Variant(eps=0.0), file_eps: Variant(eps=file_eps)}
            outs = self.reference.run(seqs, list(candidates.values()))
            kl = {eps: compare_logits(llama_logits, outs[v].logits)["mean_kl"] for eps, v in candidates.items()}
            self.eps = min(kl, key=kl.__getitem__)
            self.eps_label = EPS0_LABEL if self.eps == 0.0 else f"eps={self.eps:g}, the file's"
        return self.reference.run(seqs, [Variant(eps=self.eps)])[Variant(eps=self.eps)]

    def plain(self, seqs: Sequence[Sequence[int]]) -> ReferenceOutput:
        """The plain source model (no gates) at ``seqs``, with the eps chosen by :meth:`so8t`."""
        if self.eps is None:
            raise RuntimeError("ParityReference.plain before ParityReference.so8t chose the eps")
        variant = Variant(gates=False, eps=self.eps)
        return self.reference.run(seqs, [variant])[variant]
