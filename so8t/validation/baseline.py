"""The baseline a block-type file is judged against: llama.cpp's quantization of the *plain* source model.

A quantized SO8T text file differs from what llama.cpp's converter + ``llama-quantize`` make of the
unrotated source only in the gate-site tensors (``attn_output``, ``ffn_down``: the folded ``o_proj`` /
``down_proj``); every other tensor, the per-tensor type mix and the metadata are the same, because the
exporter quantizes with ggml's own kernels and llama.cpp's own mix (so8t/gguf/ggml_kernels.py,
so8t/gguf/llama_mix.py). So the baseline file is built by copying our file and re-encoding just the
gate-site tensors from the *unfolded* source weights, each to the type it has in our file, with the same
kernels. Same type and shape means the same byte size, so the tensors are rewritten in place and no
offset moves. Identity gates: the baseline would be the file itself; callers skip it
(:attr:`so8t.reference.StreamedReference.identity_gates`).

The copy's ``so8t.content_hash`` no longer matches its tensors: it is a scratch file for llama.cpp,
never shipped (it lives in a temporary directory removed after the check).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gguf import GGMLQuantizationType

from so8t import bf16
from so8t.adapters import qwen2vl
from so8t.checkpoint.so8t_dir import SO8TCheckpoint
from so8t.gguf.names import gguf_name
from so8t.gguf.quant import encode
from so8t.gguf.reader import open_gguf


def gate_site_tensors(checkpoint: SO8TCheckpoint) -> dict[str, str]:
    """GGUF name -> canonical source name of every gate-site tensor (weights and biases) present."""
    out = {}
    for name in checkpoint.reader.names():
        if qwen2vl.fold_site(name) is not None and (target := gguf_name(name)) is not None:
            out[target] = name
    return out


def build_baseline(gguf_path: str | Path, checkpoint: SO8TCheckpoint, out_path: str | Path,
                   rows_per_chunk: int = 1024) -> int:
    """Write the plain-model baseline of text file ``gguf_path`` to ``out_path``; returns the number of
    tensors re-encoded. Rows are encoded ``rows_per_chunk`` at a time (memory: one chunk in float32)."""
    shutil.copyfile(gguf_path, out_path)
    sites = gate_site_tensors(checkpoint)
    reader = open_gguf(out_path, "r")
    placements = [(t.name, GGMLQuantizationType(t.tensor_type), int(t.data_offset), int(t.n_bytes))
                  for t in reader.tensors if t.name in sites]
    del reader  # release the map before writing through a file handle
    with open(out_path, "r+b") as handle:
        for name, kind, offset, size in placements:
            source = checkpoint.reader.get(sites[name])
            matrix = source.reshape(-1, source.shape[-1])
            handle.seek(offset)
            written = 0
            for start in range(0, matrix.shape[0], rows_per_chunk):
                data = encode(bf16.to_float32(matrix[start : start + rows_per_chunk]), kind)
                handle.write(memoryview(data).cast("B"))
                written += data.nbytes
            if written != size:
                raise ValueError(f"{name}: re-encoded {written} bytes, the file holds {size}")
    return len(placements)
