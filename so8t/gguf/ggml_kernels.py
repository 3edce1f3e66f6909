"""ggml's own block quantizers (``ggml_quantize_chunk``), called in-process through ctypes.

These are the kernels ``llama_model_quantize`` runs for every tensor it converts: given the same float32
rows and no importance matrix they produce the same bytes, because every row is quantized on its own
(chunking and thread count cannot change the result). Calling them directly lets the exporter write
K-quant files in its single read + fold pass, without the 4-bytes-per-weight F32 file that llama.cpp's
quantizer would have to read back.

Rows are split over a pool of threads; ctypes releases the GIL for the duration of each call, so the
threads run in parallel. ggml *aborts the process* on a block-size mismatch or on a type that needs an
importance matrix, so both are checked here first and raised as ``ExportError``. Every output is also
passed through ``ggml_validate_row_data`` (non-finite scales), as llama.cpp does.
"""

from __future__ import annotations

import ctypes
import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from so8t.errors import ExportError

#: Rows per ctypes call are at least this many elements, so call overhead stays negligible.
MIN_ELEMENTS_PER_CALL = 1 << 16


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    try:
        from llama_cpp._ggml import libggml  # the ggml library that llama-cpp-python itself loads
    except Exception as err:
        raise ExportError(f"cannot load ggml from llama-cpp-python: {err}") from err
    lib = libggml
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,  # enum ggml_type
        ctypes.c_void_p,  # const float * src
        ctypes.c_void_p,  # void * dst
        ctypes.c_int64,  # start (element index)
        ctypes.c_int64,  # nrows
        ctypes.c_int64,  # n_per_row
        ctypes.c_void_p,  # const float * imatrix (NULL)
    ]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_validate_row_data.restype = ctypes.c_bool
    lib.ggml_validate_row_data.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    return lib


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


def quantize(values: np.ndarray, ggml_type: GGMLQuantizationType, threads: int = 0) -> np.ndarray:
    """Quantize the rows of 2-D ``values`` (last axis = row; converted to float32 first) to ``ggml_type``
    with ggml's kernels on ``threads`` threads (0: one per CPU). Returns the encoded bytes (uint8) of
    all rows, in order. Raises ``ExportError`` for a row length that is not a multiple of the block,
    a type that needs an importance matrix, or an encoded row ggml rejects."""
    lib = _lib()
    rows = np.ascontiguousarray(values, dtype=np.float32)
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    nrows, n_per_row = rows.shape
    block = GGML_QUANT_SIZES[ggml_type][0]
    if n_per_row % block:
        raise ExportError(f"{ggml_type.name}: row length {n_per_row} is not a multiple of its block {block}")
    if lib.ggml_quantize_requires_imatrix(int(ggml_type)):
        raise ExportError(f"{ggml_type.name} needs an importance matrix, which so8t does not compute")
    stride = row_bytes(ggml_type, n_per_row)
    out = np.empty(nrows * stride, dtype=np.uint8)
    workers = threads or os.cpu_count() or 1
    per_call = max(1, MIN_ELEMENTS_PER_CALL // n_per_row, -(-nrows // workers))
    src, dst = rows.ctypes.data, out.ctypes.data

    def run(first: int) -> None:
        count = min(per_call, nrows - first)
        # start is an element index: ggml writes row `first` at dst + first * stride
        lib.ggml_quantize_chunk(int(ggml_type), src, dst, first * n_per_row, count, n_per_row, None)

    starts = range(0, nrows, per_call)
    if len(starts) == 1:
        run(0)
    else:
        list(_pool(workers).map(run, starts))
    if not lib.ggml_validate_row_data(int(ggml_type), dst, out.nbytes):
        raise ExportError(f"{ggml_type.name}: ggml rejected the quantized rows (non-finite input values?)")
    return out
