"""The baselines a block-type file is judged against: llama.cpp's own quantization of a function.

A quantized SO8T text file differs from what llama.cpp's converter + ``llama-quantize`` make of the
unrotated source only in the gate-site tensors (``attn_output``, ``ffn_down``: the folded ``o_proj`` /
``down_proj``); every other tensor, the per-tensor type mix and the metadata are the same, because the
exporter quantizes with ggml's own kernels and llama.cpp's own mix (so8t/gguf/ggml_kernels.py,
so8t/gguf/llama_mix.py). So a baseline file is built by copying our file and re-encoding just the tensors a
realization changes, each to the type it has in our file, with the same kernels. Same type and shape means
the same byte size, so the tensors are rewritten in place and no offset moves.

Two functions (``function``):

* ``"so8t"``: the **same** SO8T function as the file, the gate-site tensors re-encoded from the float64
  fold of the checkpoint (``so8t.fold``). This is what the verdict compares with: llama.cpp's quantization
  error carried through the same network, with the same per-tensor error magnitude. Realization 0 is the
  file an honest export wrote (so it is never built; the file itself is that draw); realizations >= 1
  are other, equally legitimate roundings of the same function (below).
* ``"plain"``: the plain source function (gate-site tensors re-encoded from the *unfolded* source
  weights). Realization 0 is exactly what llama.cpp writes for the source model. Its KL is what this type
  costs the model the user started from, reported beside the verdict as information (how much more
  sensitive to rounding the gates made the network), never as the verdict itself.

Realizations (``realization`` >= 1): permuting the FFN's intermediate units (rows of ``ffn_gate`` /
``ffn_up``, columns of ``ffn_down``) and, within each key/value head, the value dimensions (rows and bias
of ``attn_v``, the matching columns of ``attn_output`` for every query head of the group) leaves either
function unchanged in exact arithmetic (RoPE touches q and k, never v; a gate rotates the *rows* of
``attn_output`` / ``ffn_down``, so it commutes with a permutation of their columns). ggml encodes each
row on its own, so a permuted row keeps its bytes (rows are moved, not re-encoded), while the permuted
``ffn_down`` / ``attn_output`` rows are re-encoded: a different rounding of exactly the tensors the gates
change.

A file quantized with an importance matrix (``quantize.imatrix.file``) is re-encoded with the same
importance vectors (``imatrix``), their columns permuted with the tensor's.

The copy's ``so8t.content_hash`` no longer matches its tensors: it is a scratch file for llama.cpp,
never shipped (it lives in a temporary directory removed after the check).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType

from so8t import bf16
from so8t.adapters import qwen2vl
from so8t.checkpoint.so8t_dir import SO8TCheckpoint
from so8t.gguf.background import ordered_map
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


def permutations(checkpoint: SO8TCheckpoint, realization: int) -> dict[str, tuple[torch.Tensor, int]]:
    """Per-layer index permutations of realization ``realization`` (module docstring): canonical source
    name -> (new-to-old index, axis), for every tensor they touch; ``{}`` for realization 0."""
    if realization == 0:
        return {}
    cfg = checkpoint.reader.text_config
    heads, kv, dim, ffn = (int(cfg.num_attention_heads), int(cfg.num_key_value_heads), int(cfg.head_dim),
                           int(cfg.intermediate_size))
    gen = torch.Generator().manual_seed(realization)
    group = heads // kv  # query heads per key/value head
    out = {}
    for layer in range(int(cfg.num_hidden_layers)):
        units = torch.randperm(ffn, generator=gen)
        within = [torch.randperm(dim, generator=gen) for _ in range(kv)]  # per key/value head
        value = torch.cat([g * dim + p for g, p in enumerate(within)])
        per_query = torch.cat([h * dim + within[h // group] for h in range(heads)])
        pre = f"model.layers.{layer}."
        out.update({pre + "mlp.gate_proj.weight": (units, 0), pre + "mlp.up_proj.weight": (units, 0),
                    pre + "mlp.down_proj.weight": (units, 1), pre + "self_attn.v_proj.weight": (value, 0),
                    pre + "self_attn.v_proj.bias": (value, 0), pre + "self_attn.o_proj.weight": (per_query, 1)})
    return out


FUNCTIONS = ("so8t", "plain")


def build_baseline(gguf_path: str | Path, checkpoint: SO8TCheckpoint, out_path: str | Path,
                   rows_per_chunk: int = 1024, realization: int = 0, tensors=None, function: str = "plain",
                   imatrix=None) -> int:
    """Write realization ``realization`` of the ``function`` baseline (module docstring) of text file
    ``gguf_path`` to ``out_path``; returns the number of tensors rewritten. Rows are encoded
    ``rows_per_chunk`` at a time (memory: one chunk in float32, or one tensor's bytes for a moved tensor;
    a folded tensor is folded whole, one float64 tensor). ``tensors``: the ``GGUFReader`` tensors of
    ``gguf_path`` when the caller has parsed it already (the copy has the same layout; parsing a full-size
    header again takes 3 s). ``imatrix``: the ``so8t.imatrix.Imatrix`` the file was quantized with."""
    if function not in FUNCTIONS:
        raise ValueError(f"function must be one of {FUNCTIONS}, got {function!r}")
    shutil.copyfile(gguf_path, out_path)
    sites = gate_site_tensors(checkpoint)
    perms = {gguf_name(name): value for name, value in permutations(checkpoint, realization).items()}
    if tensors is None:
        tensors = open_gguf(out_path, "r").tensors  # the map is released with the reader, before writing
    placements = [(t.name, GGMLQuantizationType(t.tensor_type), int(t.data_offset), int(t.n_bytes))
                  for t in tensors if t.name in sites or t.name in perms]
    del tensors
    with open(out_path, "r+b") as handle:
        for name, kind, offset, size in placements:
            handle.seek(offset)
            if name in sites:
                importance = imatrix.importance(name) if imatrix is not None else None
                written = _encode_source(handle, checkpoint, sites[name], kind, perms.get(name), rows_per_chunk,
                                         fold=function == "so8t", importance=importance)
            else:
                written = _move_rows(handle, offset, size, perms[name][0])
            if written != size:
                raise ValueError(f"{name}: rewrote {written} bytes, the file holds {size}")
    return len(placements)


def _encode_source(handle, checkpoint, source_name, kind, perm, rows_per_chunk, fold: bool, importance=None) -> int:
    """Encode the source tensor (its axis permuted if ``perm``; folded with the checkpoint's gates if
    ``fold``, in float64 and cast once, as the exporter does) at the handle's position: chunks of rows are
    encoded side by side (``ordered_map``, one thread per CPU; the full-size Q4_K_M baseline re-encodes
    451 M weights) and written in order."""
    from so8t.fold import fold_tensor

    source = checkpoint.reader.get(source_name)
    if perm is not None:
        source = source.index_select(perm[1], perm[0])
        if importance is not None and perm[1] == source.dim() - 1:  # columns moved: their importance too
            importance = importance[perm[0].numpy()]
    if fold:  # the gate rotates output rows, so it commutes with the column permutation above
        source = fold_tensor(checkpoint, source_name, source)  # float64, encoded as the exporter does
    matrix = source.reshape(-1, source.shape[-1])
    chunks = (matrix[start : start + rows_per_chunk] for start in range(0, matrix.shape[0], rows_per_chunk))
    values = (lambda rows: rows.numpy()) if fold else bf16.to_float32
    written = 0
    for data in ordered_map(lambda rows: encode(values(rows), kind, importance), chunks):
        handle.write(memoryview(data).cast("B"))
        written += data.nbytes
    return written


def _move_rows(handle, offset: int, size: int, order: torch.Tensor) -> int:
    """Reorder the encoded rows of a tensor in place (``order``: new row -> old row; a 1-D F32 bias is a
    tensor of one-element rows)."""
    raw = np.frombuffer(handle.read(size), dtype=np.uint8).reshape(len(order), -1)
    handle.seek(offset)
    handle.write(raw[order.numpy()].tobytes())
    return size
