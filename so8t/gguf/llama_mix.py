"""llama.cpp's quantizer: the per-tensor type mix of a block file type, and whole-file quantization.

``llama_model_quantize`` picks each tensor's type (Q4_K_M keeps some ``attn_v`` / ``ffn_down`` layers and
the embedding at Q6_K, Q4_0 the tied embedding, a row that fits no 256-block falls back to a 32-block
type, ...). Those rules
belong to llama.cpp, so so8t asks llama.cpp instead of restating them: ``llama_mix`` quantizes a *proxy*
GGUF and reads the types back. The rules (llama-quant.cpp: ``tensor_allows_quantization``,
``llama_tensor_get_type``, ``tensor_type_fallback``) look at the tensor's name, its row length
(``ne[0]``), its expert count (``ne[2]``), the file type and the model's hyper-parameters (layer count,
GQA ratio, experts) - never at the number of rows. The proxy therefore has the real file's architecture,
hyper-parameters and tensor names and row lengths, with every matrix cut to 2 rows (1 row would make it
1-D, which llama.cpp never quantizes): the same decisions, made in milliseconds, with no weights read.
The export then encodes every tensor with ggml's own kernels (``ggml_kernels``) in its single pass;
``suites/test_quant.py`` checks the result is byte-identical to ``llama_quantize`` of our F32 file.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType

from so8t.errors import ExportError

#: Rows llama.cpp's quantizer keeps in memory at once (its default is 8 GiB). 256 MiB keeps the peak
#: RSS of quantizing the 2B replica under 1 GB instead of 1.6-2.4 GB, with byte-identical output.
QUANTIZE_BUFFER_BYTES = 256 << 20

@dataclass(frozen=True)
class Mix:
    """Types llama.cpp chose for one file type: gguf tensor name -> type, plus the fallbacks it logged
    (one line per tensor whose row length fits no block of the intended type, naming the tensor)."""

    types: dict[str, GGMLQuantizationType]
    fallbacks: tuple[str, ...]


def llama_mix(hparams, inventory, file_type: LlamaFileType, arch: str = "qwen2vl", imatrix: bool = False) -> Mix:
    """The per-tensor types ``llama_model_quantize`` gives ``inventory`` (``names.TextTensor`` list) of a
    model with ``hparams`` (``text.TextHParams``) for ``file_type``, with every fallback explained.

    ``imatrix``: the mix of a quantization *with* an importance matrix. llama.cpp's rules depend on whether
    it has one (``qs.has_imatrix``: e.g. IQ3_XXS's ``ffn_down``, IQ4_XS's first layers, Q4_0's first
    ``ffn_down`` layers), never on its values, so the proxy is quantized with an all-ones vector per matrix;
    that also lets it decide the types llama.cpp refuses to quantize without one."""
    with tempfile.TemporaryDirectory(prefix="so8t-mix-") as tmp:
        src, dst = Path(tmp) / "proxy-f32.gguf", Path(tmp) / "proxy-quantized.gguf"
        writer = GGUFWriter(src, arch)
        hparams.add_to(writer)
        writer.add_file_type(int(LlamaFileType.ALL_F32))
        for t in inventory:
            shape = (2, t.shape[-1]) if len(t.shape) == 2 else t.shape
            writer.add_tensor(t.gguf_name, np.zeros(shape, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        ones = {t.gguf_name: np.ones(t.shape[-1], np.float32) for t in inventory if len(t.shape) == 2}
        messages = llama_quantize(src, dst, file_type, n_threads=1, imatrix=ones if imatrix else None)
        from so8t.gguf.metadata import read_gguf

        types = {t.name: GGMLQuantizationType(t.ggml_type) for t in read_gguf(dst).tensors}
    if set(types) != {t.gguf_name for t in inventory}:
        raise ExportError(
            f"llama.cpp's quantizer returned other tensors than it was given for {file_type.name}"
        )
    return Mix(types, tuple(messages))


def llama_quantize(src: Path, dst: Path, file_type: LlamaFileType, n_threads: int = 0, imatrix=None) -> list[str]:
    """Quantize GGUF ``src`` into ``dst`` with ``llama_model_quantize`` (``imatrix``: GGUF name -> float32
    importance vector, or None); returns llama.cpp's fallback messages. Raises ``ExportError`` if llama.cpp
    reports a failure."""
    from so8t.llama import api as llama_api

    rc, log = llama_api.quantize_file(src, dst, int(file_type), n_threads, QUANTIZE_BUFFER_BYTES, imatrix=imatrix)
    if rc != 0:
        raise ExportError(f"llama.cpp could not quantize to {file_type.name} (code {rc})", path=src)
    return fallback_messages(log)


def fallback_messages(log: str) -> list[str]:
    """llama.cpp's per-tensor fallback lines in a quantization log, whitespace collapsed; its closing count
    ("WARNING: N of M tensor(s) required fallback quantization") names no tensor and is left out."""
    lines = (" ".join(line.split()) for line in log.splitlines())
    return [line for line in lines if ("fallback" in line or "falling back" in line)
            and "tensor(s) required fallback" not in line]
