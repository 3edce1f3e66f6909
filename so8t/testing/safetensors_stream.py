"""Write a safetensors file one tensor at a time (bounded memory, deterministic bytes).

Format (the safetensors spec): an 8-byte little-endian header length ``N``, ``N`` bytes of JSON header
(``{"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [begin, end]}}``, offsets relative
to the end of the header, padded with spaces to a multiple of 8), then the raw little-endian tensor
bytes in header order. Because every shape and dtype is known before any data exists, the header is
written first and each tensor is produced, written and dropped in turn; the peak memory is one tensor.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

#: torch dtype name -> (safetensors dtype code, bytes per element)
SAFETENSORS_DTYPES = {
    "bfloat16": ("BF16", 2),
    "float16": ("F16", 2),
    "float32": ("F32", 4),
}


def nbytes(shape: Sequence[int], dtype: str) -> int:
    n = SAFETENSORS_DTYPES[dtype][1]
    for d in shape:
        n *= d
    return n


def header_bytes(entries: Sequence[tuple[str, Sequence[int]]], dtype: str, metadata: dict | None) -> bytes:
    """The padded JSON header for ``entries`` (name, shape) stored back to back in this order."""
    code = SAFETENSORS_DTYPES[dtype][0]
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, shape in entries:
        size = nbytes(shape, dtype)
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_streaming(
    path: Path,
    entries: Sequence[tuple[str, Sequence[int]]],
    dtype: str,
    make: Callable[[str, Sequence[int]], torch.Tensor],
    metadata: dict | None = None,
    on_tensor: Callable[[str], None] | None = None,
) -> int:
    """Write ``entries`` to ``path``, calling ``make(name, shape)`` for each tensor's values.

    ``make`` may return any float dtype; it is cast to ``dtype`` here. Returns the number of data bytes.
    """
    torch_dtype = getattr(torch, dtype)
    total = 0
    with open(path, "wb") as handle:
        handle.write(header_bytes(entries, dtype, metadata))
        for name, shape in entries:
            tensor = make(name, shape).to(torch_dtype).contiguous()
            if tuple(tensor.shape) != tuple(shape):
                raise ValueError(f"{name}: made shape {tuple(tensor.shape)}, expected {tuple(shape)}")
            data = tensor.reshape(-1).view(torch.uint8).numpy()
            handle.write(memoryview(data))
            total += data.nbytes
            if on_tensor is not None:
                on_tensor(name)
    return total
