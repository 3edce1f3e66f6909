"""Informational ``so8t.*`` keys of the text GGUF, and the content hash of its tensor data.

llama.cpp ignores unknown keys, so these travel safely in the text file; they describe how it was made
(format version, rotation dim 8, group "SO(8)", gate sites, map, folded, safety classes, source model)
and carry ``so8t.content_hash``, which the sidecar file repeats to link itself to this text file.

Content hash: sha256 over the tensors in file order; each contributes its name (UTF-8) and a NUL, its
GGML type (uint32 LE), its dimension count and dimensions in GGUF order (``ne0`` first, uint64 LE),
then the sha256 of its stored bytes. Per-tensor digests let a writer hash tensors as they arrive in any
order; ``content_hash_of_file`` recomputes it from any GGUF file (also one llama.cpp's quantizer wrote).

The hash is only known after the tensor data is written, but the key sits before it; the writer stores
a placeholder of the final length and ``patch_content_hash`` overwrites it in place.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import os
import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGUFValueType

from so8t.adapters.qwen2vl import GATE_NAMES
from so8t.errors import GGUFError
from so8t.group import ROTATION_DIM
from so8t.safety import SAFETY_CLASSES

FORMAT_VERSION = 1
CONTENT_HASH_KEY = "so8t.content_hash"
PLACEHOLDER = "0" * 64  # same length as a sha256 hex digest
DEFAULT_GATE_SITES = GATE_NAMES  # a plain checkpoint: every gate, as identity
DEFAULT_SAFETY_CLASSES = SAFETY_CLASSES


def tensor_record(name: str, ggml_type: int, gguf_dims: Iterable[int], data_digest: bytes) -> bytes:
    """The bytes one tensor contributes to the content hash (see the module docstring)."""
    dims = [int(d) for d in gguf_dims]
    head = name.encode("utf-8") + b"\0" + struct.pack("<I", int(ggml_type)) + struct.pack("<Q", len(dims))
    return head + b"".join(struct.pack("<Q", d) for d in dims) + data_digest


def combine(records: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for record in records:
        digest.update(record)
    return digest.hexdigest()


def content_hash_of(tensors: Iterable[tuple[str, int, Iterable[int], bytes]]) -> str:
    """The content hash of ``(name, GGML type, GGUF dims, sha256 digest of the stored bytes)`` in file
    order: the one computation behind the writer, ``content_hash_of_file`` and the validator."""
    return combine(tensor_record(name, ggml_type, dims, digest) for name, ggml_type, dims, digest in tensors)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a GGUF file: name, GGML type, dims in GGUF order (ne0 first), absolute data offset
    and size in bytes."""

    name: str
    ggml_type: int
    dims: tuple[int, ...]
    offset: int
    nbytes: int


_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_NUMPY = {
    0: "<u1",
    1: "<i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "?",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}


@dataclass
class GGUFTable:
    """What ``read_gguf`` returns: ``kv`` key -> value (arrays as lists), ``kv_types`` key -> GGUF value
    type ids (``(ARRAY, element type)`` for arrays), ``tensors`` in file order."""

    kv: dict[str, object]
    kv_types: dict[str, tuple[int, ...]]
    tensors: list[TensorEntry]


def read_gguf(path: str | Path) -> GGUFTable:
    """Metadata and tensor table of a little-endian GGUF file.

    A fast single-pass parser kept next to gguf-py's ``GGUFReader`` because of
    ``benchmarks/test_bench_gguf_read.py``: ``GGUFReader`` builds one numpy view per array element, which
    takes tens of seconds on a 151k-token vocabulary; the suites and that benchmark check it against
    ``GGUFReader``."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return _parse(view, path)


def _parse(buf, path) -> GGUFTable:
    """Parse the header of ``buf`` (an mmap: only the header pages are read)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        magic, _version, n_tensors, n_kv = struct.unpack_from("<IIQQ", buf, 0)
        if magic != 0x46554747:
            raise GGUFError("not a GGUF file (bad magic)", path=path)
        pos = 24

        def string(at: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", buf, at)
            return buf[at + 8 : at + 8 + n].decode("utf-8"), at + 8 + n

        def value(vtype: int, at: int):
            if vtype == 8:
                return string(at)
            if vtype == 9:
                etype, count = struct.unpack_from("<IQ", buf, at)
                at += 12
                if etype in _NUMPY:
                    arr = np.frombuffer(buf, dtype=_NUMPY[etype], count=count, offset=at)
                    items, size = arr.tolist(), arr.nbytes
                    del arr  # no view may outlive the mmap
                    return items, at + size
                items = []
                for _ in range(count):
                    item, at = value(etype, at)
                    items.append(item)
                return items, at
            fmt = _SCALARS[vtype]
            return struct.unpack_from(fmt, buf, at)[0], at + struct.calcsize(fmt)

        kv: dict[str, object] = {}
        kv_types: dict[str, tuple[int, ...]] = {}
        for _ in range(n_kv):
            key, pos = string(pos)
            (vtype,) = struct.unpack_from("<I", buf, pos)
            kv_types[key] = (vtype, struct.unpack_from("<I", buf, pos + 4)[0]) if vtype == 9 else (vtype,)
            kv[key], pos = value(vtype, pos + 4)
        infos = []
        for _ in range(n_tensors):
            name, pos = string(pos)
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
            ggml_type, offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            infos.append((name, ggml_type, tuple(int(d) for d in dims), offset))
    except (struct.error, UnicodeDecodeError, KeyError) as err:
        raise GGUFError(f"truncated or corrupt GGUF header: {err}", path=path) from err
    align = int(kv.get("general.alignment", 32))
    data_start = -(-pos // align) * align
    tensors = []
    for name, ggml_type, dims, offset in infos:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        nbytes = int(np.prod(dims[1:], dtype=np.int64)) * (dims[0] // block) * size
        tensors.append(TensorEntry(name, ggml_type, dims, data_start + offset, nbytes))
    if tensors and tensors[-1].offset + tensors[-1].nbytes > len(buf):
        raise GGUFError("tensor data runs past the end of the file (truncated?)", path=path)
    return GGUFTable(kv, kv_types, tensors)


def tensor_digests(path: str | Path) -> dict[str, tuple[int, tuple[int, ...], str]]:
    """Each tensor of a GGUF file, in file order: name -> (GGML type, GGUF dims, sha256 hex of its bytes).
    Two files hold the same tensors, whatever their order, iff these dicts are equal.

    Tensors are hashed side by side on one thread per CPU (hashlib releases the GIL; full-size F16 file:
    2.9 s -> 1.8 s), each read in 16 MiB pieces, so memory stays flat on big files."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="so8t-hash") as pool:
            return dict(pool.map(functools.partial(_tensor_digest, fd, path), read_gguf(path).tensors))
    finally:
        os.close(fd)


def _tensor_digest(fd: int, path, t) -> tuple[str, tuple[int, tuple[int, ...], str]]:
    digest, at, left = hashlib.sha256(), t.offset, t.nbytes
    while left:
        piece = os.pread(fd, min(left, 16 << 20), at)
        if not piece:
            raise GGUFError(f"{t.name}: file ends inside the tensor data", path=path)
        digest.update(piece)
        at, left = at + len(piece), left - len(piece)
    return t.name, (int(t.ggml_type), tuple(t.dims), digest.hexdigest())


def content_hash_of_file(path: str | Path) -> str:
    """Recompute the content hash of a GGUF file from its tensors."""
    return content_hash_of(
        (name, ggml_type, dims, bytes.fromhex(digest))
        for name, (ggml_type, dims, digest) in tensor_digests(path).items()
    )


def patch_content_hash(path: str | Path, digest: str) -> None:
    """Overwrite the placeholder value of ``so8t.content_hash`` in ``path`` with ``digest``."""
    if len(digest) != len(PLACEHOLDER):
        raise ValueError("content hash must be a sha256 hex digest")
    key = CONTENT_HASH_KEY.encode()
    needle = (
        struct.pack("<Q", len(key))
        + key
        + struct.pack("<I", int(GGUFValueType.STRING))
        + struct.pack("<Q", 64)
    )
    with open(path, "r+b") as handle, mmap.mmap(handle.fileno(), 0) as view:
        at = view.find(needle)
        if at < 0:
            raise GGUFError(f"no {CONTENT_HASH_KEY} key to patch", path=path)
        start = at + len(needle)
        view[start : start + 64] = digest.encode("ascii")
        view.flush()


def source_model_name(config: dict) -> str:
    """``so8t.source_model`` of a checkpoint ``config``: the *name* of the source model (the base name of
    the directory it was converted from, or of an absolute ``_name_or_path``), never a path of the
    machine that exported it. Empty when the config names no source."""
    section = config.get("so8t") or {}
    src = section.get("source") if isinstance(section, dict) else None
    if isinstance(src, dict) and (src.get("name") or src.get("path")):  # "path": checkpoints before "name"
        return Path(str(src.get("name") or src["path"])).name
    raw = str(config.get("_name_or_path") or "")
    return Path(raw).name if Path(raw).is_absolute() else raw  # a hub id such as "Qwen/..." stays


def so8t_keys(config: dict, source: str | None = None) -> dict[str, object]:
    """The ``so8t.*`` key/value pairs for a checkpoint ``config`` (its ``so8t`` section if it has one;
    a plain Qwen2-VL checkpoint is described as identity gates)."""
    section = config.get("so8t") or {}
    sites = section.get("gate_sites") or list(DEFAULT_GATE_SITES)
    if isinstance(sites, dict):  # {site: [gates in application order]}
        sites = [f"{site}=" + ",".join(gates) for site, gates in sites.items()]
    classes = section.get("safety_classes") or list(DEFAULT_SAFETY_CLASSES)
    src = section.get("source") or {}
    source_name = source or source_model_name(config)
    keys: dict[str, object] = {
        "so8t.format_version": FORMAT_VERSION,
        "so8t.rotation_dim": int(section.get("rotation_dim", ROTATION_DIM)),
        "so8t.group": str(section.get("group", "SO(8)")),
        "so8t.gate_sites": [str(s) for s in sites],
        "so8t.map": str(section.get("map", "exp")),
        "so8t.folded": True,
        "so8t.safety_classes": [str(c) for c in classes],
        CONTENT_HASH_KEY: PLACEHOLDER,
    }
    if source_name:
        keys["so8t.source_model"] = str(source_name)
    if isinstance(src, dict) and src.get("sha256"):
        keys["so8t.source_sha256"] = str(src["sha256"])
    return keys


def add_keys(writer, keys: dict[str, object]) -> None:
    """Write ``so8t_keys`` output with explicit GGUF value types."""
    for key, value in keys.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_key_value(key, str(value), GGUFValueType.STRING)
