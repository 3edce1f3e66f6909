"""Quant type registry, one-rounding float encoders, block types bit-exact with llama.cpp's quantizer,
reported fallbacks."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from hypothesis import given
from hypothesis import strategies as st

from so8t.errors import QuantTypeError
from so8t.gguf import quant
from so8t.gguf.llama_mix import llama_quantize
from suites.fixtures.gguf_files import BLOCK_TYPES, per_type


def test_parse_repeatable_and_comma_lists_in_order_without_duplicates():
    got = quant.parse_quant_types(["q8_0, F16", "Q4_K_M", "f16"])
    assert [q.name for q in got] == ["Q8_0", "F16", "Q4_K_M"]


@pytest.mark.parametrize("value", ["Q8_K", "q8_k", "F16,Q8_K"])
def test_q8_k_explains_itself(value):
    with pytest.raises(QuantTypeError) as info:
        quant.parse_quant_types(value)
    text = str(info.value)
    assert "activation" in text and "Q8_0" in text and "Q6_K" in text


def test_empty_and_unknown():
    with pytest.raises(QuantTypeError, match="no quantization type"):
        quant.parse_quant_types([" , "])
    with pytest.raises(QuantTypeError, match="unknown"):
        quant.parse_quant_types("Q2_XS")


def test_file_types_are_llama_file_types_not_tensor_types():
    from gguf import LlamaFileType

    for q in quant.QUANT_TYPES.values():
        assert isinstance(q.file_type, LlamaFileType)
    assert "Q8_K" not in quant.QUANT_TYPES and not hasattr(LlamaFileType, "MOSTLY_Q8_K")


def test_tensor_type_rules():
    f16 = quant.QUANT_TYPES["F16"]
    assert quant.tensor_type(f16, (256,)) == T.F32  # norms and biases stay F32
    assert quant.tensor_type(f16, (64, 72)) == T.F16  # float types fit any row length
    with pytest.raises(ValueError):
        quant.tensor_type(quant.QUANT_TYPES["Q6_K"], (64, 256))  # block types take llama.cpp's mix
    assert {q.name for q in quant.QUANT_TYPES.values() if q.method is quant.Method.FLOAT} == {"F32", "F16", "BF16"}


def _nearest(x: float, precision: int, emin: int) -> float:
    """Exact round-to-nearest-even of ``x`` onto a binary format with ``precision`` significant bits and
    minimum normal exponent ``emin`` (gradual underflow), by rational arithmetic."""
    if x == 0:
        return 0.0
    fx = Fraction(x)
    mag = abs(fx)
    e = max(emin, mag.numerator.bit_length() - mag.denominator.bit_length())
    while Fraction(2) ** e > mag:
        e -= 1
    e = max(e, emin)
    ulp = Fraction(2) ** (e - precision + 1)
    k = mag // ulp
    lower, upper = k * ulp, (k + 1) * ulp
    if mag - lower < upper - mag or (mag - lower == upper - mag and k % 2 == 0):
        result = lower
    else:
        result = upper
    return float(result if fx > 0 else -result)


finite = st.floats(min_value=-60000.0, max_value=60000.0, allow_nan=False, allow_infinity=False)
tiny = st.floats(min_value=-1e-6, max_value=1e-6, allow_nan=False)


@given(values=st.lists(st.one_of(finite, tiny), min_size=1, max_size=64))
def test_float_encoders_round_once_from_float64(values):
    x = np.array(values, dtype=np.float64)
    f16 = quant.encode(x, T.F16).astype(np.float64)
    bf16 = (quant.encode(x, T.BF16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    assert f16.tolist() == [_nearest(v, 11, -14) for v in values]
    assert bf16.tolist() == [_nearest(v, 8, -126) for v in values]
    assert quant.encode(x, T.F32).tolist() == [float(np.float32(v)) for v in values]


def test_bf16_double_rounding_case():
    """A float64 just above a bfloat16 tie whose float32 rounding lands exactly on the tie: rounding via
    float32 would go to even (down); one rounding goes up."""
    one_ulp_bf16 = 2.0**-7
    x = 1.0 + one_ulp_bf16 / 2 + 2.0**-40  # above the midpoint between 1 and 1 + 2^-7
    assert float(np.float32(x)) == 1.0 + one_ulp_bf16 / 2  # float32 erases the excess
    got = (quant.encode(np.array([x]), T.BF16).astype(np.uint32) << 16).view(np.float32)[0]
    assert got == np.float32(1.0 + one_ulp_bf16)


@pytest.mark.llama
@pytest.mark.parametrize("name", per_type(BLOCK_TYPES))
def test_block_types_are_bit_exact_with_llama_quantize(gguf_text, tmp_path, name):
    """llama.cpp's quantizer turns our F32 file into ``name`` with the same tensor types and bytes as the
    file our single-pass export wrote (llama.cpp's mix, encoded by ggml's kernels)."""
    from so8t.gguf.metadata import read_gguf, tensor_digests

    theirs = tmp_path / f"llama-{name}.gguf"
    llama_quantize(gguf_text["F32"].path, theirs, quant.QUANT_TYPES[name].file_type, n_threads=2)
    ours = gguf_text[name].path
    assert tensor_digests(ours) == tensor_digests(theirs)  # llama.cpp orders tensors its own way
    a = {t.name: t for t in read_gguf(ours).tensors}
    if name.endswith(("_M", "_S", "Q4_0")):  # a mix really mixes: more than one block type among the matrices
        assert len({t.ggml_type for t in a.values() if len(t.dims) == 2}) > 1


def _odd_sized_f32(path):
    """A one-layer qwen2vl model whose rows (72, 160) fit no 256-element block, and 72 no 32-block either,
    written as F32, Q8_0 and Q6_K."""
    import torch

    from so8t.gguf import metadata, names, text
    from so8t.gguf.tokenizer import TokenizerMeta

    hp = text.TextHParams(
        vocab_size=320,
        hidden_size=72,
        intermediate_size=160,
        n_layers=1,
        n_heads=2,
        n_kv_heads=1,
        context_length=256,
        rms_norm_eps=1e-6,
        rope_theta=1e4,
        mrope_section=(6, 6, 6, 0),
        tied=True,
    )
    tokens = [chr(0x100 + i) for i in range(320)]
    tok = TokenizerMeta(tokens, [1] * 320, [f"{tokens[0]} {tokens[1]}"], None, 1, 1, False, None)
    gen = torch.Generator().manual_seed(0)
    stream = [
        (t.hf_name, torch.randn(t.shape, generator=gen, dtype=torch.float64))
        for t in names.text_inventory(hp.dims, hp.n_layers, hp.tied)
    ]
    outputs = {
        "F32": (quant.QUANT_TYPES["F32"], path),
        "Q8_0": (quant.QUANT_TYPES["Q8_0"], path.with_suffix(".q8")),
        "Q6_K": (quant.QUANT_TYPES["Q6_K"], path.with_suffix(".q6k")),
    }
    return text.write_text_ggufs(stream, hp, tok, outputs, metadata.so8t_keys({}), "odd", progress=False)


@pytest.mark.llama
def test_q8_0_fallbacks_are_reported(tmp_path):
    results = _odd_sized_f32(tmp_path / "odd.gguf")
    types, fallbacks = results["Q8_0"].tensor_types, results["Q8_0"].fallbacks
    rows_72 = [n for n, t in types.items() if t == "F16"]
    assert rows_72 and all(any(n in f for f in fallbacks) for n in rows_72), fallbacks
    assert types["blk.0.ffn_down.weight"] == "Q8_0"  # rows of 160 fit 32-blocks


@pytest.mark.llama
def test_k_quant_fallbacks_match_llama_cpp_and_are_reported(tmp_path):
    """On rows that fit no 256-block our Q6_K file takes llama.cpp's fallbacks, tensor by tensor, and
    names every one of them."""
    from so8t.gguf.metadata import read_gguf

    results = _odd_sized_f32(tmp_path / "odd.gguf")
    messages = llama_quantize(tmp_path / "odd.gguf", tmp_path / "theirs.gguf", quant.QUANT_TYPES["Q6_K"].file_type, 2)
    theirs = {t.name: T(t.ggml_type).name for t in read_gguf(tmp_path / "theirs.gguf").tensors}
    assert results["Q6_K"].tensor_types == theirs
    fell_back = [n for n, k in theirs.items() if k not in ("F32", "Q6_K")]
    assert fell_back, theirs
    for name in fell_back:
        assert any(name in m for m in messages), (name, messages)
        assert any(name in f for f in results["Q6_K"].fallbacks), (name, results["Q6_K"].fallbacks)


@pytest.mark.llama
def test_ggml_kernels_refuse_what_would_abort_the_process():
    """ggml aborts the whole process on a row that does not fit the block or a type that needs an
    importance matrix; the wrapper refuses both with an ``ExportError`` instead, and rejects infinities."""
    from so8t.errors import ExportError
    from so8t.gguf import ggml_kernels

    with pytest.raises(ExportError, match="72 is not a multiple of its block 256"):
        ggml_kernels.quantize(np.zeros((2, 72), dtype=np.float32), T.Q6_K)
    with pytest.raises(ExportError, match="importance matrix"):
        ggml_kernels.quantize(np.zeros((2, 256), dtype=np.float32), T.IQ2_XXS)
    rows = np.ones((2, 256), dtype=np.float32)
    rows[1, 5] = np.inf
    with pytest.raises(ExportError, match="rejected"):
        ggml_kernels.quantize(rows, T.Q4_K)
    assert ggml_kernels.quantize(np.ones((2, 256)), T.Q8_0).nbytes == 2 * 8 * 34  # float64 in: 8 blocks of 34 B
