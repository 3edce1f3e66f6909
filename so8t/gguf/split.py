"""Split a GGUF file into parts the way llama.cpp's ``gguf-split --split-max-size`` does.

Conventions (those of llama.cpp's ``tools/gguf-split/gguf-split.cpp`` and gguf-py's ``Keys.Split``, read
there, not copied):

* part ``i`` (0-based) of ``n`` is named ``<stem>-<i+1:05d>-of-<n:05d>.gguf`` beside the whole file's path
  (``m-F16.gguf`` -> ``m-F16-00001-of-00003.gguf``); llama.cpp is given the first part and finds the others
  by that name;
* the first part holds every key of the whole file, then ``split.no`` (UINT16), ``split.count`` (UINT16)
  and ``split.tensors.count`` (INT32, tensors of all parts); the other parts hold only those three keys;
* tensors keep the whole file's order and bytes; a part takes tensors while the sum of their sizes, each
  padded to the 32-byte GGUF alignment, stays within the limit (metadata is not counted). A tensor larger
  than the limit gets a part of its own (gguf-split stops with an error when that tensor is the first one);
* a file that fits within the limit is left whole, unnamed and without split keys (gguf-py's writer does
  the same; gguf-split would write ``-00001-of-00001``).

Sizes: ``SIZE`` is bytes (``2000000``), or a whole number with ``M`` (10^6 bytes) or ``G`` (10^9 bytes),
the units of gguf-split.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from so8t.errors import ExportError

ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT
_SIZE = re.compile(r"^\s*(\d+)\s*([MG]?)\s*$")
_UNITS = {"": 1, "M": 1000**2, "G": 1000**3}
_PART = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def parse_split_size(text: str) -> int:
    """Bytes of ``--split-max-size`` (module docstring); ``ExportError`` for anything else."""
    match = _SIZE.match(str(text))
    if not match or int(match.group(1)) <= 0:
        raise ExportError(f"--split-max-size {text!r}: expected a positive number of bytes, or a whole number "
                          "with M (10^6 bytes) or G (10^9 bytes), e.g. 2G, 500M, 2000000")
    return int(match.group(1)) * _UNITS[match.group(2)]


def part_path(whole: Path, index: int, count: int) -> Path:
    """The path of part ``index`` (0-based) of ``count`` of the file ``whole``."""
    return whole.with_name(f"{whole.stem}-{index + 1:05d}-of-{count:05d}.gguf")


def part_of(path: str | Path) -> tuple[str, int, int] | None:
    """``(stem of the whole file, 0-based index, count)`` when ``path`` is named as a part, else None."""
    match = _PART.match(Path(path).name)
    if not match:
        return None
    return match.group("stem"), int(match.group("no")) - 1, int(match.group("count"))


def _padded(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def plan_parts(sizes: list[int], max_bytes: int) -> list[list[int]]:
    """Tensor indices per part, in order, for tensors of ``sizes`` bytes (module docstring)."""
    parts: list[list[int]] = [[]]
    used = 0
    for i, size in enumerate(sizes):
        if parts[-1] and used + _padded(size) > max_bytes:
            parts.append([])
            used = 0
        parts[-1].append(i)
        used += _padded(size)
    return parts


def _copy_keys(reader, writer) -> None:
    """Every key of ``reader`` but the ones ``GGUFWriter`` writes itself, with its types."""
    from gguf import GGUFValueType, Keys

    for field in reader.fields.values():
        if field.name == Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)


def _write_part(reader, tensors, index: int, count: int, out: Path) -> None:
    from gguf import GGUFWriter, Keys

    arch = reader.fields[Keys.General.ARCHITECTURE].contents()
    writer = GGUFWriter(None, arch)
    if index == 0:
        _copy_keys(reader, writer)
    else:  # gguf-split: the metadata lives in the first part only
        writer.kv_data[0].pop(Keys.General.ARCHITECTURE)
    writer.add_uint16(Keys.Split.LLM_KV_SPLIT_NO, index)
    writer.add_uint16(Keys.Split.LLM_KV_SPLIT_COUNT, count)
    writer.add_int32(Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, len(reader.tensors))
    for t in tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, raw_dtype=t.tensor_type)
    try:
        writer.write_header_to_file(path=out)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in tensors:
            writer.write_tensor_data(t.data)
    finally:
        writer.close()


def split_gguf(source: Path, whole: Path, max_bytes: int, stage: Callable[[Path], Path]) -> list[Path]:
    """Write the GGUF at ``source`` as the parts of ``whole`` (final paths, returned), each to
    ``stage(final)``: a temporary path the caller renames onto ``final`` when the whole export succeeded
    (``so8t.io.atomic_path``). A file within ``max_bytes`` moves to ``stage(whole)`` unsplit: ``[whole]``."""
    import os

    from so8t.gguf.reader import open_gguf

    reader = open_gguf(source)
    parts = plan_parts([int(t.n_bytes) for t in reader.tensors], max_bytes)
    if len(parts) == 1:
        del reader
        os.replace(source, stage(whole))
        return [whole]
    finals = [part_path(whole, i, len(parts)) for i in range(len(parts))]
    for i, (final, indices) in enumerate(zip(finals, parts)):
        _write_part(reader, [reader.tensors[j] for j in indices], i, len(parts), stage(final))
    return finals
