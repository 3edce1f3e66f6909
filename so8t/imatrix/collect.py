"""Collect an importance matrix from the SO8T model: the mean squared input activation of every column of
every quantized weight, over a calibration text (docs/reference.md section 8).

The activations come from the float64 streamed reference (``so8t.reference.StreamedReference.observe``):
the SO8T function with its gates applied, the function the exported file computes. For each decoder layer
the inputs of ``q/k/v_proj`` (the attention norm's output), ``o_proj`` (the attention output, *before*
the gates: the folded ``attn_output`` takes the same input), ``gate/up_proj`` and ``down_proj`` are
squared and summed over every token. ``llama-imatrix`` run on the exported file would see the same inputs
(up to llama.cpp's float32 rounding); it records the same seven weights per layer and, like here, neither
the embedding (a row lookup) nor the tied output.

The text is tokenized with the checkpoint's own tokenizer and cut into chunks of ``chunk_size`` tokens
(llama-imatrix's ``n_ctx``), each evaluated as its own causal sequence from position 0; a last partial
chunk is kept. All chunks go through ONE pass over the weights, decoder layer by decoder layer, so memory is
one layer's weights in float64 plus the activations of every token (``tokens x intermediate`` float64:
12 MB per 1k tokens at 0.5B) and the file is read once. The RMSNorm eps is the checkpoint's.
"""

from __future__ import annotations

import importlib.resources
import time
from pathlib import Path

import numpy as np

from so8t.errors import DataError
from so8t.imatrix.file import Imatrix

#: The calibration text shipped with so8t (English prose and dialogue, Japanese, code; about 1.5k tokens).
DEFAULT_CALIBRATION = "calibration.txt"
CHUNK_SIZE = 512  # tokens per chunk, llama-imatrix's default context

_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
            "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def default_calibration_path() -> Path:
    return Path(str(importlib.resources.files("so8t.data").joinpath(DEFAULT_CALIBRATION)))


def read_calibration(path: str | Path | None) -> tuple[str, str]:
    """``(text, dataset name)`` of a calibration file (None: the shipped one). An unreadable, non-UTF-8 or
    blank file raises a one-line ``DataError`` naming it."""
    path = Path(path) if path is not None else default_calibration_path()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the calibration text: {err}", path=path) from None
    if not text.strip():
        raise DataError("the calibration text is empty", path=path)
    return text, path.name


def collect_imatrix(so8t_dir: str | Path, text: str, dataset: str = "calibration.txt",
                    chunk_size: int = CHUNK_SIZE, progress: bool = True) -> tuple[Imatrix, float]:
    """The importance matrix of the SO8T checkpoint ``so8t_dir`` on ``text`` (module docstring) and the
    seconds it took. Keys are the GGUF weight names (``blk.N.attn_q.weight`` ...)."""
    from so8t.adapters import qwen2vl
    from so8t.gguf.names import gguf_name
    from so8t.reference import StreamedReference
    from so8t.training.data import load_tokenizer

    if chunk_size < 1:
        raise DataError(f"chunk size must be at least 1, got {chunk_size}")
    start = time.perf_counter()
    ids = load_tokenizer(so8t_dir).encode(text, add_special_tokens=False)
    if not ids:
        raise DataError("the calibration text has no tokens", path=dataset)
    chunks = [ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)]
    names = {m: {} for m in _MODULES}
    sums: dict[str, np.ndarray] = {}

    def observe(layer: int, module: str, x) -> None:
        if module not in names:
            return
        name = names[module].get(layer) or gguf_name(qwen2vl.text_layer_tensor(layer, module) + ".weight")
        names[module][layer] = name
        sums[name] = x[0].pow(2).sum(0).numpy()  # [T, in] -> [in], float64

    StreamedReference(so8t_dir).observe(chunks, observe, progress=progress)
    imatrix = Imatrix(sums, dict.fromkeys(sums, float(len(ids))), [dataset], len(chunks), chunk_size)
    return imatrix, time.perf_counter() - start


def model_matrices(hparams) -> dict[str, int]:
    """GGUF name -> row length of every weight an importance matrix covers for a model with ``hparams``
    (``so8t.gguf.hparams.TextHParams``): the 2-D weights of the decoder layers."""
    from so8t.gguf.names import text_inventory

    return {t.gguf_name: t.shape[-1] for t in text_inventory(hparams.dims, hparams.n_layers, hparams.tied)
            if t.is_matrix and t.gguf_name.startswith("blk.")}
