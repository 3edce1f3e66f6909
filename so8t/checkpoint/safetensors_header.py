"""Check a safetensors file's header against its size without reading any tensor data.

Layout: ``u64 little-endian N``, ``N`` bytes of JSON, then the data block. Every tensor's
``data_offsets`` are relative to the data block, and the file must end exactly where the last tensor
ends: a shorter file is truncated (an interrupted copy or download), a longer one is corrupt.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from so8t.errors import CheckpointError

#: safetensors dtype code -> (torch dtype name, bytes per element); the dtypes a Qwen2-VL checkpoint uses.
DTYPES = {"BF16": ("bfloat16", 2), "F16": ("float16", 2), "F32": ("float32", 4)}
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the header describes it (``name`` as spelled on disk)."""

    name: str
    file: Path
    dtype: str  # torch dtype name
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Parse and validate the header of ``path``; CheckpointError naming the file on any inconsistency."""
    size, header_len, raw = _read_raw_header(path)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"corrupt safetensors header (not JSON): {err}", path=path) from err
    if not isinstance(header, dict):
        raise CheckpointError("corrupt safetensors header (not an object)", path=path)
    base = 8 + header_len
    entries: dict[str, TensorEntry] = {}
    data_end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        entries[name] = _entry(path, name, info, base)
        data_end = max(data_end, entries[name].end - base)
    if base + data_end > size:
        raise CheckpointError(
            f"truncated safetensors file: tensors need {base + data_end} bytes, file has {size}",
            path=path,
            hint="the file was cut short (interrupted copy or download); fetch it again",
        )
    if base + data_end < size:
        raise CheckpointError(
            f"corrupt safetensors file: {size - base - data_end} bytes after the last tensor", path=path
        )
    return entries


def _read_raw_header(path: Path) -> tuple[int, int, bytes]:
    """(file size, header length, header bytes) of ``path``, the length checked against the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"truncated safetensors file: {size} bytes, no header", path=path)
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER:
                raise CheckpointError(f"corrupt safetensors header length {header_len}", path=path)
            if 8 + header_len > size:
                raise CheckpointError(
                    f"truncated safetensors file: header needs {8 + header_len} bytes, file has {size}",
                    path=path,
                )
            return size, header_len, handle.read(header_len)
    except OSError as err:
        raise CheckpointError(f"cannot read safetensors file: {err.strerror or err}", path=path) from err


def _entry(path: Path, name: str, info, base: int) -> TensorEntry:
    """The ``TensorEntry`` of header entry ``name``; its offsets are relative to the data at ``base``."""
    try:
        code, shape, (begin, end) = (
            info["dtype"],
            tuple(int(d) for d in info["shape"]),
            info["data_offsets"],
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"corrupt safetensors header entry {name!r}", path=path) from err
    if code not in DTYPES:
        raise CheckpointError(
            f"tensor {name!r} has dtype {code}; only BF16, F16 and F32 checkpoints are supported",
            path=path,
        )
    dtype, width = DTYPES[code]
    count = 1
    for d in shape:
        count *= d
    if not (isinstance(begin, int) and isinstance(end, int)) or begin < 0 or end - begin != count * width:
        raise CheckpointError(f"corrupt safetensors header: bad data_offsets for {name!r}", path=path)
    return TensorEntry(name, path, dtype, shape, base + begin, base + end)
