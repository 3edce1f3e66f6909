"""ggml's own block quantizers (``ggml_quantize_chunk``), called in-process through ctypes.

These are the kernels ``llama_model_quantize`` runs for every tensor it converts: given the same float32
rows and the same importance vector (one float32 per column, or none) they produce the same bytes, because every row is quantized on its own
(chunking and thread count cannot change the result). Calling them directly lets the exporter write
Q8_0 / Q4_0 / K-quant files in its single read + fold pass, without the 4-bytes-per-weight F32 file that
llama.cpp's quantizer would have to read back.

Chunks of rows are quantized as jobs on a pool of threads (``submit``); ctypes releases the GIL for the
duration of each call, so the jobs run in parallel while the caller prepares the next chunk. torch must
run single-threaded meanwhile (``torch_single_threaded``): after each parallel op its idle OpenMP workers
spin-wait on the cores, which halved ggml's throughput on 2 cores (Q6_K on a 8960x1536 tensor in 4 MiB
chunks: 38 Melem/s between 2-thread torch ops, 75 with torch on one thread, 77 without torch).

ggml *aborts the process* on a block-size mismatch or on a type that needs an importance matrix, so both
are checked here first and raised as ``ExportError``. Every output is also passed through
``ggml_validate_row_data`` (non-finite scales), as llama.cpp does.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from so8t import profile
from so8t.errors import ExportError
from so8t.llama import api as llama_api


def _lib():
    """ggml as llama-cpp-python loaded it, prototypes declared (``so8t.llama.api.ggml``)."""
    return llama_api.ggml()


@functools.lru_cache(maxsize=8)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="so8t-ggml-quantize")


def row_bytes(ggml_type: GGMLQuantizationType, n_per_row: int) -> int:
    """Bytes of one row of ``n_per_row`` elements, as gguf-py computes it; checked against ggml's own
    ``ggml_row_size`` so the two libraries cannot silently disagree about a type."""
    block, size = GGML_QUANT_SIZES[ggml_type]
    ours = n_per_row // block * size
    theirs = _lib().ggml_row_size(int(ggml_type), n_per_row)
    if ours != theirs:
        raise ExportError(
            f"gguf-py and ggml disagree on the row size of {ggml_type.name}: {ours} != {theirs}"
        )
    return ours


def quantize(values: np.ndarray, ggml_type: GGMLQuantizationType, importance: np.ndarray | None = None) -> np.ndarray:
    """Quantize the rows of ``values`` (last axis = row; converted to float32 first) to ``ggml_type`` with
    one ggml call on this thread, weighting each column's error by ``importance`` (float32, one per column:
    an importance matrix's mean squared input activations; None: ggml's unweighted default). Returns the
    encoded bytes (uint8) of all rows, in order. Raises ``ExportError`` for a row length that is not a
    multiple of the block, an importance vector of another length, a type that needs an importance
    matrix when none is given, or an encoded row ggml rejects."""
    lib = _lib()
    with profile.phase("cast"):
        rows = np.ascontiguousarray(values, dtype=np.float32)
    n_per_row = rows.shape[-1]
    nrows = rows.size // n_per_row
    block = GGML_QUANT_SIZES[ggml_type][0]
    if n_per_row % block:
        raise ExportError(f"{ggml_type.name}: row length {n_per_row} is not a multiple of its block {block}")
    weights = None
    if importance is not None:
        weights = np.ascontiguousarray(importance, dtype=np.float32)
        if weights.shape != (n_per_row,):
            raise ExportError(f"{ggml_type.name}: importance vector of shape {weights.shape}, rows of {n_per_row}")
    elif lib.ggml_quantize_requires_imatrix(int(ggml_type)):
        raise ExportError(f"{ggml_type.name} needs an importance matrix", hint="pass --imatrix FILE")
    out = np.empty(nrows * row_bytes(ggml_type, n_per_row), dtype=np.uint8)
    with profile.phase("quantize"):
        lib.ggml_quantize_chunk(int(ggml_type), rows.ctypes.data, out.ctypes.data, 0, nrows, n_per_row,
                                None if weights is None else weights.ctypes.data)
        valid = lib.ggml_validate_row_data(int(ggml_type), out.ctypes.data, out.nbytes)
    if not valid:
        raise ExportError(f"{ggml_type.name}: ggml rejected the quantized rows (non-finite input values?)")
    return out


def submit(values: np.ndarray, ggml_type: GGMLQuantizationType, threads: int = 0,
           importance: np.ndarray | None = None) -> Future:
    """``quantize`` as a job on a shared pool of ``threads`` threads (0: one per CPU); the future holds
    the encoded bytes. Chunks submitted one after another run side by side, so the caller can prepare
    the next chunk meanwhile; whoever consumes the futures in order gets the bytes in order."""
    return _pool(threads or os.cpu_count() or 1).submit(quantize, values, ggml_type, importance)


@contextlib.contextmanager
def torch_single_threaded(enabled: bool = True) -> Iterator[None]:
    """Run torch on one intra-op thread inside the block (restored after), so its OpenMP workers do not
    spin on the cores ggml's quantizer threads need. A no-op when not ``enabled``."""
    if not enabled:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=32)
def _to_float(ggml_type: GGMLQuantizationType):
    traits = llama_api.ggml_type_traits(int(ggml_type))
    if traits.blck_size != GGML_QUANT_SIZES[ggml_type][0] or traits.type_size != GGML_QUANT_SIZES[ggml_type][1]:
        raise ExportError(f"ggml's type traits of {ggml_type.name} disagree with gguf-py's block size")
    return traits.to_float


def dequantize(data: np.ndarray, ggml_type: GGMLQuantizationType) -> np.ndarray:
    """Float32 values of encoded rows ``data`` (uint8 ``[rows, row_bytes]``, as ``GGUFReader`` gives a block
    type) with ggml's own ``to_float`` kernel: the values llama.cpp computes with. Releases the GIL."""
    raw = np.ascontiguousarray(data, dtype=np.uint8)
    block, size = GGML_QUANT_SIZES[ggml_type]
    rows = raw.reshape(-1, raw.shape[-1]) if raw.ndim > 1 else raw.reshape(1, -1)
    n_per_row = rows.shape[1] // size * block
    out = np.empty((rows.shape[0], n_per_row), dtype=np.float32)
    _to_float(ggml_type)(raw.ctypes.data, out.ctypes.data, out.size)
    return out
