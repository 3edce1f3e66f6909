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

import hashlib
import mmap
import struct
from collections.abc import Iterable
from pathlib import Path

from gguf import GGUFValueType

from so8t.errors import GGUFError

FORMAT_VERSION = 1
CONTENT_HASH_KEY = "so8t.content_hash"
PLACEHOLDER = "0" * 64  # same length as a sha256 hex digest
DEFAULT_GATE_SITES = ("attn_rot", "attn_safe", "attn_cmd", "mlp_rot")
DEFAULT_SAFETY_CLASSES = ("ALLOW", "ESCALATE", "REFUSE")


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


def content_hash_of_file(path: str | Path) -> str:
    """Recompute the content hash of a GGUF file from its tensors."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (OSError, ValueError) as err:
        raise GGUFError(f"not a readable GGUF file: {err}", path=path) from err
    records = []
    for t in reader.tensors:
        digest = hashlib.sha256(memoryview(t.data).cast("B")).digest()
        records.append(tensor_record(t.name, int(t.tensor_type), [int(d) for d in t.shape], digest))
    return combine(records)


def patch_content_hash(path: str | Path, digest: str) -> None:
    """Overwrite the placeholder value of ``so8t.content_hash`` in ``path`` with ``digest``."""
    if len(digest) != len(PLACEHOLDER):
        raise ValueError("content hash must be a sha256 hex digest")
    key = CONTENT_HASH_KEY.encode()
    needle = (
        struct.pack("<Q", len(key)) + key + struct.pack("<I", int(GGUFValueType.STRING)) + struct.pack("<Q", 64)
    )
    with open(path, "r+b") as handle, mmap.mmap(handle.fileno(), 0) as view:
        at = view.find(needle)
        if at < 0:
            raise GGUFError(f"no {CONTENT_HASH_KEY} key to patch", path=path)
        start = at + len(needle)
        view[start : start + 64] = digest.encode("ascii")
        view.flush()


def so8t_keys(config: dict, source: str | None = None) -> dict[str, object]:
    """The ``so8t.*`` key/value pairs for a checkpoint ``config`` (its ``so8t`` section if it has one;
    a plain Qwen2-VL checkpoint is described as identity gates)."""
    section = config.get("so8t") or {}
    sites = section.get("gate_sites") or list(DEFAULT_GATE_SITES)
    if isinstance(sites, dict):  # {site: [gates in application order]}
        sites = [f"{site}=" + ",".join(gates) for site, gates in sites.items()]
    classes = section.get("safety_classes") or list(DEFAULT_SAFETY_CLASSES)
    src = section.get("source") or {}
    if source is None and isinstance(src, dict) and src.get("path"):
        source = Path(src["path"]).name
    source_name = source or config.get("_name_or_path")
    keys: dict[str, object] = {
        "so8t.format_version": FORMAT_VERSION,
        "so8t.rotation_dim": int(section.get("rotation_dim", 8)),
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
