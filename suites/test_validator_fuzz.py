"""Fuzzing the validator: hypothesis mutates the bytes of a valid small text GGUF (truncate, flip, splice
over, delete, insert). The validator must never raise, and must return an overall FAIL whenever the
mutation changed a byte that carries tensor data or required metadata.

"Required" bytes (``protected``) are derived from the original file's own layout as gguf-py parses it:
the header, every tensor-info record, every tensor's data, and every metadata entry llama.cpp or the
so8t format requires (key, type, length and value). Left out, because no check can tell a changed
value from the original without the checkpoint (``--so8t-model`` compares them; see
``metadata.checkpoint_consistency``): the free-text payloads (``tokenizer.chat_template``, the text of
CONTROL tokens), the three hyper-parameters with no cross-check in the file (``context_length``, the
RMS epsilon, the rope base), optional keys (``general.name``), and alignment padding. Everything else,
however small the change (one mantissa bit of one weight, one letter of one merge), must fail.

The llama.cpp stage is off (``run_runtime=False``): structural checks must already fail. Derandomised;
200 examples per file type (about 2 s each: the tiny file validates in ~10 ms).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, TokenType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from so8t.validation import SO8TGGUFValidator
from suites.test_validator import write_tiny_gguf

#: Metadata whose bytes may change without the validator being able to notice (module docstring).
UNCHECKABLE_VALUES = ("qwen2vl.context_length", "qwen2vl.attention.layer_norm_rms_epsilon", "qwen2vl.rope.freq_base")
OPTIONAL_KEYS = ("general.name", "so8t.source_model", "so8t.source_sha256")
FREE_TEXT = ("tokenizer.chat_template",)


def _part_spans(fld):
    """Byte spans of each part of a gguf-py ReaderField, in file order."""
    spans, at = [], int(fld.offset)
    for part in fld.parts:
        spans.append((at, at + int(part.nbytes)))
        at += int(part.nbytes)
    return spans


def protected_mask(path: Path) -> np.ndarray:
    """Boolean per byte: True where a change must make the validator FAIL."""
    reader = GGUFReader(path)
    size = path.stat().st_size
    mask = np.zeros(size, dtype=bool)
    mask[:24] = True  # magic, version, tensor count, kv count
    control = {i for i, t in enumerate(reader.fields["tokenizer.ggml.token_type"].contents())
               if t == int(TokenType.CONTROL)}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        spans = _part_spans(fld)
        if key in OPTIONAL_KEYS:
            continue
        mask[spans[0][0] : spans[-1][1]] = True
        if key in UNCHECKABLE_VALUES or key in FREE_TEXT:
            start, end = spans[-1]  # the value (for a string: its bytes; the length stays protected)
            mask[start:end] = False
        if key == "tokenizer.ggml.tokens":
            for i in control:
                start, end = spans[int(fld.data[i])]
                mask[start:end] = False
    for t in reader.tensors:
        spans = _part_spans(t.field)
        mask[spans[0][0] : spans[-1][1]] = True  # tensor info: name, dims, type, offset
        mask[int(t.data_offset) : int(t.data_offset) + int(t.n_bytes)] = True
    return mask


@pytest.fixture(scope="module", params=["F16", "Q8_0"])
def original(request, tmp_path_factory):
    path = write_tiny_gguf(tmp_path_factory.mktemp("fuzz") / f"tiny-{request.param}.gguf", request.param)
    report = SO8TGGUFValidator(path, run_runtime=False).run()
    assert report.overall == "UNVERIFIED", report.table(verbose=True)  # every structural check passes
    return path.read_bytes(), protected_mask(path), path


@st.composite
def mutations(draw, size: int):
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "delete", "insert"]))
    pos = draw(st.integers(0, size - 1))
    if kind == "truncate":
        return kind, pos, None
    if kind == "flip":
        return kind, pos, draw(st.integers(1, 255))
    length = draw(st.integers(1, 64))
    if kind == "splice":
        return kind, pos, draw(st.integers(0, size - 1))  # copy from another offset over pos
    if kind == "insert":
        return kind, pos, draw(st.binary(min_size=1, max_size=length))
    return kind, pos, length


def mutate(data: bytes, mutation) -> bytes:
    kind, pos, arg = mutation
    if kind == "truncate":
        return data[:pos]
    if kind == "flip":
        out = bytearray(data)
        out[pos] ^= arg
        return bytes(out)
    if kind == "splice":
        length = min(64, len(data) - pos, len(data) - arg)
        return data[:pos] + data[arg : arg + length] + data[pos + length :]
    if kind == "insert":
        return data[:pos] + arg + data[pos:]
    return data[:pos] + data[pos + arg :]


def changed_protected(original: bytes, mask: np.ndarray, mutated: bytes) -> bool:
    """Did any protected byte change (compared position by position; a missing byte has changed)?"""
    n = min(len(original), len(mutated))
    old = np.frombuffer(original, dtype=np.uint8)
    new = np.frombuffer(mutated, dtype=np.uint8)
    differs = np.zeros(len(original), dtype=bool)
    differs[:n] = old[:n] != new[:n]
    differs[n:] = True
    return bool((differs & mask).any())


def validate_bytes(data: bytes, tmp: Path):
    path = tmp / "mutated.gguf"
    path.write_bytes(data)
    return SO8TGGUFValidator(path, run_runtime=False).run()  # must not raise, whatever the bytes


@settings(max_examples=200, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_gguf_fails_whenever_required_bytes_change(original, tmp_path, data):
    raw, mask, _path = original
    mutation = data.draw(mutations(len(raw)))
    mutated = mutate(raw, mutation)
    report = validate_bytes(mutated, tmp_path)
    if changed_protected(raw, mask, mutated):
        assert report.overall == "FAIL", (mutation, report.table(verbose=True))
    assert report.by_status("ERROR") == [], (mutation, report.table(verbose=True))


def test_every_metadata_entry_and_tensor_record_is_guarded(original, tmp_path):
    """Systematic sweep beside the random one: flip the first and the last byte of every protected
    metadata entry, tensor-info record and tensor; each flip alone must fail validation."""
    raw, mask, path = original
    reader = GGUFReader(path)
    spans = [(int(f.offset), _part_spans(f)[-1][1]) for k, f in reader.fields.items() if not k.startswith("GGUF.")]
    spans += [(_part_spans(t.field)[0][0], _part_spans(t.field)[-1][1]) for t in reader.tensors]
    spans += [(int(t.data_offset), int(t.data_offset) + int(t.n_bytes)) for t in reader.tensors]
    positions = sorted({p for start, end in spans for p in (start, end - 1) if p < len(raw) and mask[p]})
    assert len(positions) > 50
    missed = []
    for pos in positions:
        report = validate_bytes(mutate(raw, ("flip", pos, 0x01)), tmp_path)
        if report.overall != "FAIL":
            missed.append(pos)
    assert not missed, f"flips at {missed[:10]} went unnoticed"
