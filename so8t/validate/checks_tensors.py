"""Tensor checks of the text GGUF: inventory, shapes, types, finiteness, content hash, values vs source.

The inventory is the exporter's own table (``so8t.gguf.names.text_inventory``) evaluated with the sizes
the file's metadata states, so "what llama.cpp expects" has one definition: no tensor missing, none
extra (llama.cpp refuses a file with extra tensors), each with the shape the metadata implies, norms and
biases F32. Values are dequantized with gguf-py (``so8t.gguf.quant.decode``) a block of rows at a time.

Value bounds (``--so8t-model``): each dequantized element ``y`` is compared with the float64 fold ``x``
of the source (``so8t.fold.iter_folded_tensors``) against an elementwise bound derived from the storage
format alone (:func:`error_bound`), never from an observed error:

* float types round once: ``|y - x| <= u |x|`` with unit roundoff ``u`` = 2^-24 (F32), 2^-11 (F16,
  plus 2^-25 absolute for subnormals), 2^-8 (BF16);
* symmetric 32-blocks: Q8_0 ``d = amax/127``, round to nearest, ``|e| <= d/2``; Q4_0 / Q5_0
  ``d = amax/8`` (``/16``), the far end may clip by one step, ``|e| <= d``; affine Q4_1 / Q5_1
  ``d = (max-min)/15`` (``/31``), ``|e| <= d/2``; each plus the F16 rounding of the stored scale
  (``2^-11`` relative, times the largest quant level) and of the float32 input;
* K-quants (llama.cpp's quantizer: least-squares scale search, 6-8 bit sub-block scales): at most one
  step of a ``2^bits``-level grid across ``[-amax, amax]`` of the 256-element super-block,
  ``|e| <= 2 amax / (2^bits - 1)`` (half a step from rounding, the rest for the quantized sub-block
  scales; bits 6/5/4/3/2 for Q6_K/Q5_K/Q4_K/Q3_K/Q2_K). The same envelope as H3's round-trip test
  (suites/test_gguf_text.py ``_bound``).

The measured figure is the largest ``|y - x| / bound`` over all elements (must be <= 1).
"""

from __future__ import annotations

import hashlib

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from so8t.validate.checks_metadata import hparams
from so8t.validate.context import CheckFailed, Context, check, expect, passed, skipped

_T = GGMLQuantizationType
_U_F16, _U_BF16, _U_F32 = 2.0**-11, 2.0**-8, 2.0**-24
#: symmetric block types: levels of the scale (d = amax / levels), error in steps (1/2 if the far end never
#: clips, 1 if it may), largest |quant level| (multiplies the F16 rounding of d)
_SYMMETRIC = {_T.Q8_0: (127.0, 0.5, 127.0), _T.Q4_0: (8.0, 1.0, 8.0), _T.Q5_0: (16.0, 1.0, 16.0)}
#: affine block types: d = (max - min) / steps, error d/2
_AFFINE = {_T.Q4_1: 15.0, _T.Q5_1: 31.0}
#: K-quants: bits per weight level
_K_BITS = {_T.Q6_K: 6, _T.Q5_K: 5, _T.Q4_K: 4, _T.Q3_K: 3, _T.Q2_K: 2}


def error_bound(x: np.ndarray, ggml_type: GGMLQuantizationType) -> np.ndarray | None:
    """Elementwise bound on ``|dequantize(quantize(x)) - x|`` for float64 ``x`` of shape ``[rows, cols]``
    stored as ``ggml_type`` (see the module docstring); None for a type without a known bound."""
    ax = np.abs(x)
    if ggml_type == _T.F32:
        return ax * _U_F32 + 2.0**-149
    if ggml_type == _T.F16:
        return np.maximum(ax * _U_F16, 2.0**-25)
    if ggml_type == _T.BF16:
        return ax * _U_BF16 + 2.0**-133
    block = GGML_QUANT_SIZES[ggml_type][0]
    if x.shape[-1] % block:
        return None
    blocks = x.reshape(*x.shape[:-1], -1, block)
    f32_input = 4 * _U_F32
    if ggml_type in _SYMMETRIC:
        levels, steps, qmax = _SYMMETRIC[ggml_type]
        amax = np.abs(blocks).max(axis=-1, keepdims=True)
        d = amax / levels
        bound = d * steps + qmax * np.maximum(d * _U_F16, 2.0**-25) + amax * f32_input
    elif ggml_type in _AFFINE:
        lo, hi = blocks.min(axis=-1, keepdims=True), blocks.max(axis=-1, keepdims=True)
        d = (hi - lo) / _AFFINE[ggml_type]
        bound = d / 2 + _AFFINE[ggml_type] * np.maximum(d * _U_F16, 2.0**-25) + np.abs(lo) * _U_F16 * 2
        bound = bound + np.maximum(np.abs(lo), np.abs(hi)) * f32_input
    elif ggml_type in _K_BITS:
        amax = np.abs(blocks).max(axis=-1, keepdims=True)
        bound = 2 * amax / (2 ** _K_BITS[ggml_type] - 1) + amax * f32_input
    else:
        return None
    return np.broadcast_to(bound, blocks.shape).reshape(x.shape)


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


def _row_chunks(t, rows_per_chunk: int = 4096):
    """Dequantized float32 chunks ``[rows, cols]`` of a ReaderTensor, in row order."""
    from so8t.gguf.quant import decode

    kind = _T(t.tensor_type)
    data = t.data
    if data.ndim == 1:
        data = data.reshape(1, -1)
    flat = data.reshape(-1, data.shape[-1])
    for start in range(0, flat.shape[0], rows_per_chunk):
        chunk = np.asarray(flat[start : start + rows_per_chunk])
        with np.errstate(all="ignore"):  # garbage bytes may decode to NaN/Inf: that is what we look for
            values = chunk.astype(np.float32) if kind in (_T.F32, _T.F16) else decode(chunk, kind)
        yield start, values.reshape(chunk.shape[0], -1)


@check("tensors.finite", "tensors", requires=("tensors.types",))
def finite(ctx: Context):
    total = bad = 0
    first = None
    for t in ctx.reader.tensors:
        for _start, values in _row_chunks(t):
            n_bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            total += values.size
            if n_bad and first is None:
                first = t.name
            bad += n_bad
    expect(bad == 0, f"{bad} NaN/Inf values after dequantizing, first in {first}", measured=bad, bound=0)
    return passed(f"{total} values dequantized, all finite", measured=0, bound=0)


def content_hash(reader) -> str:
    """``so8t.content_hash`` of an open GGUFReader, with the exporter's record layout
    (``so8t.gguf.metadata.tensor_record``)."""
    from so8t.gguf.metadata import combine, tensor_record

    records = []
    for t in reader.tensors:
        digest = hashlib.sha256(memoryview(np.ascontiguousarray(t.data)).cast("B")).digest()
        records.append(tensor_record(t.name, int(t.tensor_type), [int(d) for d in t.shape], digest))
    return combine(records)


@check("tensors.content_hash", "tensors", requires=("file.layout", "metadata.so8t_keys"))
def content_hash_matches(ctx: Context):
    stored = ctx.value("so8t.content_hash")
    actual = content_hash(ctx.reader)
    expect(actual == stored, f"tensor data changed since export: recomputed content hash {actual[:16]}... != "
           f"so8t.content_hash {stored[:16]}...", measured=actual, bound=stored)
    return passed("recomputed content hash equals so8t.content_hash", measured=actual, bound=stored)


@check("tensors.values_vs_source", "tensors", requires=("tensors.finite", "tensors.shapes"))
def values_vs_source(ctx: Context):
    if ctx.so8t_model is None:
        return skipped("no --so8t-model given")
    import torch

    from so8t.checkpoint.so8t_dir import SO8TCheckpoint
    from so8t.fold import iter_folded_tensors
    from so8t.gguf.names import gguf_name

    ckpt = ctx.cache.get("checkpoint") or SO8TCheckpoint(ctx.so8t_model)
    ctx.cache["checkpoint"] = ckpt
    tensors = {t.name: t for t in ctx.reader.tensors}
    worst, worst_name, worst_abs, compared, no_bound = 0.0, "", 0.0, set(), []
    for hub_name, source in iter_folded_tensors(ckpt, part="text"):
        name = gguf_name(hub_name)
        if name is None or name not in tensors:
            continue  # a tied lm_head, or vision: the inventory check covers what must be there
        t = tensors[name]
        x_all = source.detach().to(torch.float64).numpy()
        x_all = x_all.reshape(-1, x_all.shape[-1]) if x_all.ndim > 1 else x_all.reshape(1, -1)
        for start, y in _row_chunks(t):
            x = x_all[start : start + y.shape[0]]
            bound = error_bound(x, _T(t.tensor_type))
            if bound is None:
                no_bound.append(name)
                break
            err = np.abs(y.astype(np.float64) - x)
            ratio = float((err / bound).max())
            if ratio > worst:
                worst, worst_name, worst_abs = ratio, name, float(err.max())
        compared.add(name)
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
    bad = 0
    for t in reader.tensors:
        if len(t.shape) == 1:
            expect(_T(t.tensor_type) == _T.F32, f"mmproj tensor {t.name} (1-D) is {_T(t.tensor_type).name}, not F32")
        for _start, values in _row_chunks(t):
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
    expect(bad == 0, f"{bad} NaN/Inf values in the mmproj", measured=bad, bound=0)
    return passed(f"{len(present)} tensors of a depth-{depth} tower, all finite", measured=len(present))
