"""Quantization types of the text GGUF: one registry, two methods.

* ``float`` types (F32, F16, BF16) are rounded here, tensor by tensor, *once* from the float64 fold
  (F16 by numpy's direct double->half conversion, or torch's equal one from float32 for tensors that
  were not folded; BF16 by round-to-odd to float32 then round-to-nearest-even, which equals a single
  rounding).
* ``llama`` types (Q8_0, Q4_0, Q6_K and the K-quant mixes): llama.cpp chooses the per-tensor mix
  (``llama_mix``; e.g. Q4_0 and Q4_K_M keep the tied embedding at Q6_K) and ggml's own kernels encode
  each tensor in the same single pass (``ggml_kernels``), from the float32 rounding of the fold: the
  bytes ``llama_model_quantize`` writes from our F32 file, without writing that file.

Norms and biases (1-D tensors) stay F32 in every type. In a block type, a 2-D tensor whose row length is
not a multiple of the block size (32 for Q8_0/Q4_0, 256 for K-quants) falls back to another type (llama.cpp's
choice); every fallback is reported, never silent.

``GGMLQuantizationType`` is the type of one tensor; ``LlamaFileType`` (``general.file_type``) names the
mix of a whole file. "Q8_K" is neither a file type nor usable for weights: it is llama.cpp's internal
activation type for K-quant dot products, so asking for it is a user error.
"""

from __future__ import annotations

import enum
import math
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType
from gguf import quants as gq

from so8t import profile
from so8t.errors import QuantTypeError


class Method(enum.Enum):
    FLOAT = "float"  # rounded here, tensor by tensor
    LLAMA = "llama"  # llama.cpp's per-tensor mix, encoded by ggml's kernels


@dataclass(frozen=True)
class QuantType:
    """A file-level quantization choice."""

    name: str
    file_type: LlamaFileType
    method: Method
    tensor_type: GGMLQuantizationType | None = None  # float types: the type of 2-D tensors
    description: str = ""
    #: llama.cpp refuses the file type without an importance matrix (its mix holds IQ3_XXS / IQ2_S tensors,
    #: llama-quant.cpp ``tensor_requires_imatrix``); suites/test_quant.py checks this against llama.cpp
    needs_imatrix: bool = False


_T = GGMLQuantizationType
_F = LlamaFileType
#: Every supported type, in the order the CLI lists them.
QUANT_TYPES: dict[str, QuantType] = {
    q.name: q
    for q in (
        QuantType("F32", _F.ALL_F32, Method.FLOAT, _T.F32, "float32, exact reference"),
        QuantType("F16", _F.MOSTLY_F16, Method.FLOAT, _T.F16, "float16"),
        QuantType("BF16", _F.MOSTLY_BF16, Method.FLOAT, _T.BF16, "bfloat16"),
        QuantType("Q8_0", _F.MOSTLY_Q8_0, Method.LLAMA, description="8-bit, 32-element blocks"),
        QuantType("Q4_0", _F.MOSTLY_Q4_0, Method.LLAMA, description="4-bit, 32-element blocks"),
        QuantType("Q6_K", _F.MOSTLY_Q6_K, Method.LLAMA, description="6-bit K-quant"),
        QuantType("Q5_K_M", _F.MOSTLY_Q5_K_M, Method.LLAMA, description="5-bit K-quant mix"),
        QuantType("Q5_K_S", _F.MOSTLY_Q5_K_S, Method.LLAMA, description="5-bit K-quant, small"),
        QuantType("Q4_K_M", _F.MOSTLY_Q4_K_M, Method.LLAMA, description="4-bit K-quant mix"),
        QuantType("Q4_K_S", _F.MOSTLY_Q4_K_S, Method.LLAMA, description="4-bit K-quant, small"),
        QuantType("Q3_K_L", _F.MOSTLY_Q3_K_L, Method.LLAMA, description="3-bit K-quant mix, large"),
        QuantType("Q3_K_M", _F.MOSTLY_Q3_K_M, Method.LLAMA, description="3-bit K-quant mix"),
        QuantType("Q3_K_S", _F.MOSTLY_Q3_K_S, Method.LLAMA, description="3-bit K-quant, small"),
        QuantType("Q2_K", _F.MOSTLY_Q2_K, Method.LLAMA, description="2-bit K-quant mix"),
        QuantType("IQ4_XS", _F.MOSTLY_IQ4_XS, Method.LLAMA, description="4.25-bit non-linear, 256-blocks"),
        QuantType("IQ4_NL", _F.MOSTLY_IQ4_NL, Method.LLAMA, description="4.5-bit non-linear, 32-blocks"),
        QuantType("IQ3_M", _F.MOSTLY_IQ3_M, Method.LLAMA, description="3.66-bit i-quant mix"),
        QuantType("IQ3_XXS", _F.MOSTLY_IQ3_XXS, Method.LLAMA, description="3.06-bit i-quant", needs_imatrix=True),
        QuantType("IQ2_M", _F.MOSTLY_IQ2_M, Method.LLAMA, description="2.7-bit i-quant mix", needs_imatrix=True),
    )
}

Q8_K_MESSAGE = (
    "Q8_K is not a model file type: llama.cpp uses it only internally, to quantize activations for "
    "K-quant dot products, and cannot store weights in it"
)
Q8_K_HINT = "use Q8_0 (8-bit, near lossless) or Q6_K (6-bit K-quant)"


def parse_quant_types(values: str | list[str] | tuple[str, ...]) -> list[QuantType]:
    """Parse ``["Q8_0", "F16,Q4_K_M"]`` (repeatable and/or comma lists; case-insensitive) in order,
    without duplicates. Raises ``QuantTypeError`` for Q8_K (with the reason) and unknown names."""
    if isinstance(values, str):
        values = [values]
    out: list[QuantType] = []
    for value in values:
        for raw in str(value).split(","):
            name = raw.strip().upper()
            if not name:
                continue
            if name == "Q8_K":
                raise QuantTypeError(Q8_K_MESSAGE, hint=Q8_K_HINT)
            if name not in QUANT_TYPES:
                raise QuantTypeError(
                    f"unknown quantization type {raw.strip()!r}",
                    hint="supported: " + ", ".join(QUANT_TYPES),
                )
            if QUANT_TYPES[name] not in out:
                out.append(QUANT_TYPES[name])
    if not out:
        raise QuantTypeError("no quantization type given", hint="supported: " + ", ".join(QUANT_TYPES))
    return out


def require_imatrix(quant_types, has_imatrix: bool) -> None:
    """Raise a one-line ``QuantTypeError`` naming ``--imatrix`` for the first type that needs an importance
    matrix when there is none."""
    needs = [q.name for q in quant_types if q.needs_imatrix]
    if needs and not has_imatrix:
        raise QuantTypeError(f"{', '.join(needs)} needs an importance matrix (llama.cpp refuses it without one)",
                             hint="pass --imatrix FILE (from 'so8t imatrix') or --calibration TEXT")


def tensor_type(qt: QuantType, shape: tuple[int, ...]) -> GGMLQuantizationType:
    """Type of one tensor of a ``float`` file: F32 for 1-D tensors (norms, biases), else the file's type."""
    if qt.method is not Method.FLOAT:
        raise ValueError(f"{qt.name} takes llama.cpp's per-tensor mix (so8t.gguf.llama_mix)")
    return _T.F32 if len(shape) < 2 else qt.tensor_type


def nbytes(shape: tuple[int, ...], ggml_type: GGMLQuantizationType) -> int:
    """Bytes of a tensor of numpy-order ``shape`` stored as ``ggml_type``."""
    block, size = GGML_QUANT_SIZES[ggml_type]
    return math.prod(shape[:-1]) * (shape[-1] // block) * size


FLOAT_TYPES = frozenset({_T.F32, _T.F16, _T.BF16})


def encode(values: np.ndarray, ggml_type: GGMLQuantizationType, importance: np.ndarray | None = None) -> np.ndarray:
    """Encode float64 (or float32) ``values`` as ``ggml_type``: one rounding from the given values.
    Float types are rounded here (``importance`` ignored); block types are encoded by ggml's kernels
    (``ggml_kernels``), weighted by ``importance`` (one float32 per column) when given."""
    if ggml_type == _T.F32:
        return np.ascontiguousarray(values, dtype=np.float32)
    if ggml_type == _T.F16:
        if values.dtype == np.float32:
            return _f32_to_f16(values)
        return np.ascontiguousarray(values).astype(np.float16)  # numpy rounds double -> half directly
    if ggml_type == _T.BF16:
        return _to_bf16_bits(np.ascontiguousarray(values))
    from so8t.gguf import ggml_kernels

    return ggml_kernels.quantize(values, ggml_type, importance)


def encode_later(values: np.ndarray, ggml_type: GGMLQuantizationType, threads: int = 0,
                 importance: np.ndarray | None = None) -> Future:
    """``encode`` as a future: block types run as a job on ggml's quantizer pool (``threads``, 0: one per
    CPU) while the caller goes on; float types are rounded now, on this thread."""
    if ggml_type in FLOAT_TYPES:
        done: Future = Future()
        with profile.phase("cast"):
            done.set_result(encode(values, ggml_type))
        return done
    from so8t.gguf import ggml_kernels

    return ggml_kernels.submit(values, ggml_type, threads, importance)


def _f32_to_f16(values: np.ndarray) -> np.ndarray:
    """float32 -> float16, round to nearest even: torch's vectorized conversion, bit-identical to numpy's
    (also for subnormals, overflow to inf and NaN payloads; checked exhaustively over all 2^32 inputs)
    and about 15x faster. Float64 never comes here: torch rounds double -> half through float."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(values)).to(torch.float16).numpy()


def _to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round to bfloat16 (nearest, ties to even) once, returning the bits as uint16.

    Float64 input is first rounded to float32 *to odd* (truncate, then set the last bit if inexact),
    which keeps a later round-to-nearest-even to 16 bits equal to a direct rounding."""
    if values.dtype == np.float64:
        f32 = values.astype(np.float32)
        overshoot = np.abs(f32.astype(np.float64)) > np.abs(values)
        f32 = np.where(overshoot, np.nextafter(f32, np.float32(0)), f32)
        bits = f32.view(np.uint32).copy()
        bits |= (f32.astype(np.float64) != values).astype(np.uint32)
    else:
        bits = values.astype(np.float32).view(np.uint32).copy()
    rounded = (bits.astype(np.uint64) + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def decode(data: np.ndarray, ggml_type: GGMLQuantizationType) -> np.ndarray:
    """Float32 values of stored tensor ``data`` (as ``GGUFReader`` returns it)."""
    return gq.dequantize(np.asarray(data), ggml_type).astype(np.float32, copy=False)


# --- error bounds ----------------------------------------------------------------------------

_U_F32, _U_F16, _U_BF16 = 2.0**-24, 2.0**-11, 2.0**-8
#: symmetric block types: levels of the scale (d = amax / levels), error in steps (1/2 if the far end never
#: clips, 1 if it may), largest |quant level| (multiplies the F16 rounding of d)
_SYMMETRIC = {_T.Q8_0: (127.0, 0.5, 127.0), _T.Q4_0: (8.0, 1.0, 8.0), _T.Q5_0: (16.0, 1.0, 16.0)}
#: affine block types: d = (max - min) / steps, error d/2
_AFFINE = {_T.Q4_1: 15.0, _T.Q5_1: 31.0}
#: K-quants: bits per weight level
_K_BITS = {_T.Q6_K: 6, _T.Q5_K: 5, _T.Q4_K: 4, _T.Q3_K: 3, _T.Q2_K: 2}


def error_bound(ggml_type: GGMLQuantizationType, values: np.ndarray) -> np.ndarray | None:
    """Elementwise bound on ``|decode(encode(values)) - values|`` for float64 ``values`` (rows last, blocks
    along the rows) stored as ``ggml_type``, derived from the storage format alone; None for a type
    without a known bound or a row length that is not a multiple of the block.

    * float types round once: ``|e| <= u |x|`` with unit roundoff ``u`` = 2^-24 (F32, plus 2^-149 absolute
      for float32 subnormals), 2^-11 (F16, at least 2^-25 absolute for subnormals), 2^-8 (BF16, plus
      2^-133 absolute);
    * symmetric 32-blocks: Q8_0 ``d = amax/127``, round to nearest, ``|e| <= d/2``; Q4_0 / Q5_0
      ``d = amax/8`` (``/16``) with the sign of the largest element, so the largest element of the other
      sign may clip by one step, ``|e| <= d``; affine Q4_1 / Q5_1 ``d = (max-min)/15`` (``/31``),
      ``|e| <= d/2`` (plus the F16 rounding of the stored minimum); each plus the F16 rounding of the
      stored scale (``2^-11`` relative, at least 2^-25, times the largest quant level) and
      ``4 * 2^-24 * amax`` for the float32 rounding of the input and the encoder's float32 arithmetic;
    * K-quants (llama.cpp's quantizer: least-squares scale search, 6-8 bit sub-block scales): at most one
      step of a ``2^bits``-level grid across ``[-amax, amax]`` of the 256-element super-block,
      ``|e| <= 2 amax / (2^bits - 1)`` (half a step from rounding, the rest for the quantized sub-block
      scales; bits 6/5/4/3/2 for Q6_K/Q5_K/Q4_K/Q3_K/Q2_K), plus the same ``4 * 2^-24 * amax``.

    Shared by the export round-trip suite (suites/test_gguf_text.py) and the validator's
    ``tensors.values_vs_source`` check.
    """
    import torch

    bound = _bound(ggml_type, torch.from_numpy(np.require(values, np.float64, ["W"])))
    if bound is None:
        return None
    bound = bound.numpy()
    if bound.shape == values.shape:
        return bound
    block = GGML_QUANT_SIZES[ggml_type][0]
    return np.broadcast_to(bound, (*values.shape[:-1], values.shape[-1] // block, block)).reshape(values.shape)


def block_error_ratio(ggml_type: GGMLQuantizationType, values: np.ndarray, decoded: np.ndarray):
    """``(max |decoded - values| / error_bound, max |decoded - values|)`` over all elements, computed block
    by block without materialising the elementwise bound; ``(None, None)`` where ``error_bound`` is None.

    In torch (float64, all threads): ``benchmarks/test_bench_validate.py`` times this inside the validator's
    ``tensors.values_vs_source``; numpy's single-threaded passes made it 3-4x slower at the real size."""
    import torch

    x = torch.from_numpy(np.require(values, np.float64, ["W"]))
    bound = _bound(ggml_type, x)
    if bound is None:
        return None, None
    err = torch.from_numpy(np.array(decoded, dtype=np.float64)).sub_(x).abs_()
    if bound.shape != x.shape:  # one bound per block: compare each block's largest error with its bound
        err = err.reshape(bound.shape[:-1] + (-1,)).amax(dim=-1, keepdim=True)
    return float(err.div(bound).max()), float(err.max())


def _bound(ggml_type: GGMLQuantizationType, x):
    """:func:`error_bound` of the float64 torch tensor ``x``: elementwise for float types, ``[..., n_blocks,
    1]`` per block for block types; None without a known bound."""
    import torch

    if ggml_type == _T.F32:
        return x.abs().mul_(_U_F32).add_(2.0**-149)
    if ggml_type == _T.F16:
        return x.abs().mul_(_U_F16).clamp_(min=2.0**-25)
    if ggml_type == _T.BF16:
        return x.abs().mul_(_U_BF16).add_(2.0**-133)
    block = GGML_QUANT_SIZES[ggml_type][0]
    if x.shape[-1] % block:
        return None
    blocks = x.reshape(*x.shape[:-1], -1, block)
    f32_input = 4 * _U_F32
    if ggml_type in _SYMMETRIC:
        levels, steps, qmax = _SYMMETRIC[ggml_type]
        amax = blocks.abs().amax(dim=-1, keepdim=True)
        d = amax / levels
        bound = d * steps + qmax * torch.clamp(d * _U_F16, min=2.0**-25) + amax * f32_input
    elif ggml_type in _AFFINE:
        lo, hi = blocks.amin(dim=-1, keepdim=True), blocks.amax(dim=-1, keepdim=True)
        d = (hi - lo) / _AFFINE[ggml_type]
        bound = d / 2 + _AFFINE[ggml_type] * torch.clamp(d * _U_F16, min=2.0**-25) + lo.abs() * _U_F16 * 2
        bound = bound + torch.maximum(lo.abs(), hi.abs()) * f32_input
    elif ggml_type in _K_BITS:
        amax = blocks.abs().amax(dim=-1, keepdim=True)
        bound = 2 * amax / (2 ** _K_BITS[ggml_type] - 1) + amax * f32_input
    else:
        return None
    return bound
