"""Tensor checks of the text GGUF: inventory, shapes, types, finiteness, content hash, values vs source.

The inventory is the exporter's own table (``so8t.gguf.names.text_inventory``) evaluated with the sizes
the file's metadata states, so "what llama.cpp expects" has one definition: no tensor missing, none
extra (llama.cpp refuses a file with extra tensors), each with the shape the metadata implies, norms and
biases F32. Values are dequantized a chunk of rows at a time (block types by ggml's own ``to_float``
kernels, ``so8t.gguf.ggml_kernels.dequantize``: the values llama.cpp computes with).

Memory: tensor bytes are read with plain file I/O, one chunk of rows at a time, never through the reader's
memory map (the pages a pass over a map touches stay resident: a whole 3 GB F16 file by the end), and
the source rows are read and folded chunk by chunk (``so8t.fold.folded_rows``), so a check holds about
``CHUNK_ELEMENTS`` values of each side at a time, whatever the model's size.

Value bounds (``--so8t-model``): each dequantized element ``y`` is compared with the float64 fold ``x``
of the source (``so8t.fold.iter_folded_tensors``) against an elementwise bound derived from the storage
format alone (``so8t.gguf.quant.error_bound``, derived there from each block format and shared with the
export round-trip suite, suites/test_gguf_text.py), never from an observed error.

The measured figure is the largest ``|y - x| / bound`` over all elements (must be <= 1).

A block tensor with no such bound (the i-quants) or quantized with an importance matrix (the weighted
least-squares search may trade one column's error for another's, so the one-step bound no longer follows
from the format) is checked exactly instead: its bytes must equal ggml's encoding of the same fold with the
file's importance vector (``so8t.imatrix.file.imatrix_of``), ratio 0 if equal, infinite otherwise.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from so8t.gguf.background import ordered_map
from so8t.gguf.quant import block_error_ratio
from so8t.validation.checks_metadata import hparams
from so8t.validation.context import CheckFailed, Context, check, expect, passed, skipped

_T = GGMLQuantizationType


def _expected(ctx: Context):
    from so8t.gguf.names import text_inventory

    hp = hparams(ctx)
    rows = next((int(t.shape[1]) for t in ctx.reader.tensors if t.name == "token_embd.weight" and len(t.shape) == 2),
                None)
    expect(rows is not None, "token_embd.weight (2-D) is missing")
    head_dim = hp["embedding_length"] // hp["attention.head_count"]
    dims = {"vocab": rows, "hidden": hp["embedding_length"], "ffn": hp["feed_forward_length"],
            "q": hp["attention.head_count"] * head_dim, "kv": hp["attention.head_count_kv"] * head_dim}
    tied = not any(t.name == "output.weight" for t in ctx.reader.tensors)
    return {t.gguf_name: t for t in text_inventory(dims, hp["block_count"], tied)}


def _shape(t) -> tuple[int, ...]:
    """numpy-order shape (``[out, in]``) of a ``ReaderTensor`` (GGUF stores ``ne0`` first)."""
    return tuple(int(d) for d in reversed(t.shape.tolist()))


@check("tensors.inventory", "tensors", requires=("metadata.hparams",))
def inventory(ctx: Context):
    expected = _expected(ctx)
    present = [t.name for t in ctx.reader.tensors]
    missing = [n for n in expected if n not in present]
    extra = [n for n in present if n not in expected]
    expect(not missing, f"{len(missing)} tensors missing: {', '.join(missing[:4])}", measured=len(missing), bound=0)
    expect(not extra, f"{len(extra)} extra tensors llama.cpp would refuse: {', '.join(extra[:4])}",
           measured=len(extra), bound=0)
    return passed(f"exactly the {len(expected)} tensors llama.cpp's qwen2vl loads", measured=len(present),
                  bound=len(expected))


@check("tensors.shapes", "tensors", requires=("tensors.inventory",))
def shapes(ctx: Context):
    expected = _expected(ctx)
    for t in ctx.reader.tensors:
        want = expected[t.name].shape
        expect(_shape(t) == want, f"tensor {t.name} has shape {list(_shape(t))}, the metadata implies {list(want)}",
               measured=str(list(_shape(t))), bound=str(list(want)))
    return passed("every shape follows from the metadata sizes", measured=len(expected))


@check("tensors.types", "tensors", requires=("tensors.inventory",))
def types(ctx: Context):
    counts: dict[str, int] = {}
    for t in ctx.reader.tensors:
        kind = _T(t.tensor_type)
        if len(t.shape) == 1:
            expect(kind == _T.F32, f"tensor {t.name} (norm/bias) is {kind.name}; llama.cpp needs F32",
                   measured=kind.name, bound="F32")
        block = GGML_QUANT_SIZES[kind][0]
        expect(int(t.shape[0]) % block == 0, f"tensor {t.name}: row length {int(t.shape[0])} not a multiple of "
               f"the {kind.name} block {block}")
        counts[kind.name] = counts.get(kind.name, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return passed(f"norms and biases F32; {summary}", measured=summary)


#: Elements per chunk of rows read, decoded and compared at a time (bounds the checks' memory). Small
#: enough that a chunk's float64 arrays (8 MB) stay near the cores' caches through the half-dozen passes
#: of a comparison: ``values_vs_source`` on the full-size F16 file took 16.2 s with 4M, 11.9 s with 1M and
#: 12.5 s with 256K elements (more Python per element).
CHUNK_ELEMENTS = 1 << 20


def _raw_chunks(path, t, rows_per_chunk: int | None = None):
    """``(first_row, raw bytes [rows, row_bytes])`` of a ReaderTensor, read from ``path`` chunk by chunk."""
    n_per_row = int(t.shape[0])
    nrows = max(1, int(t.n_elements) // max(n_per_row, 1))
    row_bytes = int(t.n_bytes) // nrows
    step = rows_per_chunk or max(8, CHUNK_ELEMENTS // max(n_per_row, 1) // 8 * 8)
    with open(path, "rb") as handle:
        for start in range(0, nrows, step):
            rows = min(step, nrows - start)
            handle.seek(int(t.data_offset) + start * row_bytes)
            raw = np.frombuffer(handle.read(rows * row_bytes), dtype=np.uint8)
            if raw.size != rows * row_bytes:
                raise CheckFailed(f"{path}: tensor {t.name} is cut short at row {start}")
            yield start, raw.reshape(rows, row_bytes)


def _decode(raw: np.ndarray, kind: _T) -> np.ndarray:
    """Float32 values ``[rows, n_per_row]`` of raw rows of type ``kind``."""
    from so8t.gguf.ggml_kernels import dequantize

    with np.errstate(all="ignore"):  # garbage bytes may decode to NaN/Inf: that is what we look for
        if kind == _T.F32:
            return raw.view(np.float32)
        if kind == _T.F16:
            return raw.view(np.float16).astype(np.float32)
        if kind == _T.BF16:
            from so8t.bf16 import bits_to_float32

            return bits_to_float32(raw.view(np.uint16))
        return dequantize(raw, kind)


def _all_chunks(path, tensors):
    """``(tensor, raw rows)`` of every chunk of ``tensors``, in file order."""
    return ((t, raw) for t in tensors for _start, raw in _raw_chunks(path, t))


def _count_nonfinite(item) -> tuple[str, int, int]:
    """``(tensor, raw rows)`` -> (tensor name, values, NaN/Inf values after dequantizing)."""
    t, raw = item
    values = _decode(raw, _T(t.tensor_type))
    return t.name, values.size, int(values.size - np.count_nonzero(np.isfinite(values)))


@check("tensors.finite", "tensors", requires=("tensors.types",))
def finite(ctx: Context):
    total = bad = 0
    first = None
    for name, size, n_bad in ordered_map(_count_nonfinite, _all_chunks(ctx.gguf_path, ctx.reader.tensors)):
        total += size
        if n_bad and first is None:
            first = name
        bad += n_bad
    expect(bad == 0, f"{bad} NaN/Inf values after dequantizing, first in {first}", measured=bad, bound=0)
    return passed(f"{total} values dequantized, all finite", measured=0, bound=0)


@check("tensors.content_hash", "tensors", requires=("file.layout", "metadata.so8t_keys"))
def content_hash_matches(ctx: Context):
    stored = ctx.value("so8t.content_hash")
    from so8t.errors import GGUFError
    from so8t.gguf.metadata import content_hash_of_file

    try:
        actual = content_hash_of_file(ctx.gguf_path)
    except GGUFError as err:  # e.g. a flipped byte inside a string: gguf-py keeps the bytes, we decode them
        raise CheckFailed(f"cannot recompute the content hash: {err}") from err
    expect(actual == stored, f"tensor data changed since export: recomputed content hash {actual[:16]}... != "
           f"so8t.content_hash {stored[:16]}...", measured=actual, bound=stored)
    return passed("recomputed content hash equals so8t.content_hash", measured=actual, bound=stored)


@check("tensors.values_vs_source", "tensors", requires=("tensors.finite", "tensors.shapes"))
def values_vs_source(ctx: Context):
    if ctx.so8t_model is None:
        return skipped("no --so8t-model given")
    from so8t.checkpoint.so8t_dir import SO8TCheckpoint
    from so8t.fold import folded_rows
    from so8t.gguf.names import gguf_name
    from so8t.gguf.quant import FLOAT_TYPES, encode
    from so8t.imatrix.file import imatrix_of

    ckpt = ctx.cache.get("checkpoint") or SO8TCheckpoint(ctx.so8t_model)
    ctx.cache["checkpoint"] = ckpt
    tensors = {t.name: t for t in ctx.reader.tensors}
    imatrix = imatrix_of(ctx.gguf_path, ctx.reader)
    worst, worst_name, worst_abs, compared, no_bound = 0.0, "", 0.0, set(), []

    def compare(item):  # one chunk of rows: the file's values against the float64 fold of the source
        hub_name, t, start, raw = item
        y = _decode(raw, _T(t.tensor_type))
        x = folded_rows(ckpt, hub_name, start, start + y.shape[0]).reshape(y.shape)
        kind = _T(t.tensor_type)
        weighted = imatrix is not None and kind not in FLOAT_TYPES
        ratio, err = (None, None) if weighted else block_error_ratio(kind, x, y)
        if ratio is None and kind not in FLOAT_TYPES:  # the exact check (module docstring)
            importance = imatrix.importance(t.name) if imatrix is not None else None
            same = np.array_equal(encode(x, kind, importance).reshape(raw.shape), raw)
            return t.name, 0.0 if same else float("inf"), float(np.abs(y - x).max())
        return t.name, ratio, err

    # a tied lm_head, or vision, has no tensor here: the inventory check covers what must be there
    hub_to_gguf = {h: gguf_name(h) for h in ckpt.reader.names()}
    pairs = [(h, tensors[name]) for h, name in hub_to_gguf.items() if name in tensors]
    chunks = ((h, t, start, raw) for h, t in pairs for start, raw in _raw_chunks(ctx.gguf_path, t))
    for name, ratio, err in ordered_map(compare, chunks):
        compared.add(name)
        if ratio is None:
            if name not in no_bound:
                no_bound.append(name)
        elif ratio > worst:
            worst, worst_name, worst_abs = ratio, name, err
    expect(set(compared) == set(tensors), f"the checkpoint lacks {sorted(set(tensors) - compared)[:3]}")
    if no_bound:
        raise CheckFailed(f"no error bound for the types of {no_bound[:3]}")
    expect(worst <= 1.0, f"{worst_name}: error {worst_abs:.3g} is {worst:.2f}x its format bound (max |y - x| / "
           "bound over all elements): the file does not hold the folded checkpoint", measured=worst, bound=1.0)
    return passed(f"{len(compared)} tensors within their format bound (worst {worst_name}: {worst:.3f} of the "
                  f"bound, {worst_abs:.2e} absolute)", measured=worst, bound=1.0)


@check("tensors.mmproj", "tensors", requires=("metadata.mmproj",))
def mmproj_tensors(ctx: Context):
    """The mmproj holds exactly the tensors of H4's name table for its depth, 1-D ones F32, all finite."""
    from so8t.gguf.vision_names import pieces

    reader = ctx.mmproj_reader
    depth = int(reader.fields["clip.vision.block_count"].contents())
    expect(depth <= len(reader.tensors), f"clip.vision.block_count {depth} exceeds the tensor count")
    expected = {p.target for p in pieces(depth)}
    present = [t.name for t in reader.tensors]
    missing, extra = sorted(expected - set(present)), sorted(set(present) - expected)
    expect(not missing, f"mmproj tensors missing: {missing[:4]}", measured=len(missing), bound=0)
    expect(not extra, f"unexpected mmproj tensors: {extra[:4]}", measured=len(extra), bound=0)
    for t in reader.tensors:
        if len(t.shape) == 1:
            expect(_T(t.tensor_type) == _T.F32, f"mmproj tensor {t.name} (1-D) is {_T(t.tensor_type).name}, not F32")
    bad = sum(n_bad for _n, _s, n_bad in ordered_map(_count_nonfinite, _all_chunks(ctx.mmproj_path, reader.tensors)))
    expect(bad == 0, f"{bad} NaN/Inf values in the mmproj", measured=bad, bound=0)
    return passed(f"{len(present)} tensors of a depth-{depth} tower, all finite", measured=len(present))
