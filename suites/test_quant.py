"""Quant type registry, one-rounding float encoders, Q8_0 bit-exact with llama.cpp, reported fallbacks."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from hypothesis import given
from hypothesis import strategies as st

from so8t.errors import QuantTypeError
from so8t.gguf import quant


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
    q8 = quant.QUANT_TYPES["Q8_0"]
    assert quant.tensor_type(q8, (256,)) == (T.F32, None)  # norms and biases stay F32
    assert quant.tensor_type(q8, (64, 256)) == (T.Q8_0, None)
    ggml_type, note = quant.tensor_type(q8, (64, 72))  # 72 is not a multiple of 32
    assert ggml_type == T.F16 and "72" in note and "Q8_0" in note
    with pytest.raises(ValueError):
        quant.tensor_type(quant.QUANT_TYPES["Q6_K"], (64, 256))


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
def test_numpy_q8_0_is_bit_exact_with_llama_cpp(gguf_text, tmp_path):
    """llama.cpp's quantizer turns our F32 file into Q8_0 with the same bytes as our numpy Q8_0 file."""
    from so8t.gguf.metadata import read_gguf

    theirs = tmp_path / "llama-q8_0.gguf"
    quant.llama_quantize(gguf_text["F32"].path, theirs, quant.QUANT_TYPES["Q8_0"], n_threads=2)
    ours = gguf_text["Q8_0"].path
    a = {t.name: t for t in read_gguf(ours).tensors}
    b = {t.name: t for t in read_gguf(theirs).tensors}  # llama.cpp orders tensors its own way
    assert set(a) == set(b)
    with open(ours, "rb") as fa, open(theirs, "rb") as fb:
        for name, ta in a.items():
            tb = b[name]
            assert (ta.ggml_type, ta.dims) == (tb.ggml_type, tb.dims), ta.name
            fa.seek(ta.offset)
            fb.seek(tb.offset)
            assert fa.read(ta.nbytes) == fb.read(tb.nbytes), ta.name


def _odd_sized_f32(path):
    """A one-layer qwen2vl F32 file whose rows (72) fit neither 32- nor 256-element blocks."""
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
    }
    return text.write_text_ggufs(stream, hp, tok, outputs, metadata.so8t_keys({}), "odd", progress=False)


def test_numpy_fallbacks_are_reported(tmp_path):
    results = _odd_sized_f32(tmp_path / "odd.gguf")
    fallbacks = results["Q8_0"].fallbacks
    rows_72 = [n for n, t in results["Q8_0"].tensor_types.items() if t == "F16"]
    assert rows_72 and len(fallbacks) == len(rows_72)
    assert all("72" in f for f in fallbacks)
    assert results["Q8_0"].tensor_types["blk.0.ffn_down.weight"] == "Q8_0"  # rows of 160 fit


@pytest.mark.llama
def test_llama_cpp_fallbacks_are_reported(tmp_path):
    from so8t.gguf.metadata import read_gguf

    _odd_sized_f32(tmp_path / "odd.gguf")
    messages = quant.llama_quantize(
        tmp_path / "odd.gguf", tmp_path / "odd-q6k.gguf", quant.QUANT_TYPES["Q6_K"], 2
    )
    kinds = {t.name: T(t.ggml_type).name for t in read_gguf(tmp_path / "odd-q6k.gguf").tensors}
    fell_back = [n for n, k in kinds.items() if k not in ("F32", "Q6_K")]
    assert fell_back, kinds
    assert messages and all("fallback" in m for m in messages)
