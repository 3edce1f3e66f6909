"""Importance matrices: llama.cpp's file format, collection from the SO8T model, the export's use of them
(byte-identical to llama.cpp's quantizer given the same importance data), and one-line errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from so8t.cli import main
from so8t.errors import GGUFError
from so8t.gguf import quant
from so8t.imatrix.file import Imatrix, read_imatrix, write_imatrix
from suites.fixtures.gguf_files import per_type, running_types

#: Types whose bytes with an imatrix are compared with llama_model_quantize given the same importance.
IMATRIX_TYPES = ("Q4_K_M", "Q3_K_S", "Q2_K", "IQ4_XS", "IQ4_NL", "IQ3_M", "IQ3_XXS", "IQ2_M", "Q3_K_L", "Q3_K_M")
#: What a user's checkpoint runs of the byte identity without --so8t-heavy: none. Each type re-quantizes the
#: whole model twice (IQ4_XS: 147 s and 133 s at Qwen2-VL-2B size) to check what every type and shape
#: shares, that each tensor got its own importance vector. The rule that depends on the shape (i-quants
#: fall back where a row is not a multiple of 256) is checked without an importance matrix on the user's
#: model (suites/test_quant.py) and with one, for IQ4_XS, on the hidden-384 shape variant in every default
#: gate (suites/test_shape_variants.py); all ten types run on the embedded model and with --so8t-heavy.
LIGHT_TYPES: tuple[str, ...] = ()


def test_llama_cpp_layout_and_importance(tmp_path):
    """What llama-quantize reads: general.type, the three imatrix.* keys, F32 ``W.in_sum2`` [n, 1] and
    ``W.counts`` [1, 1]; the importance is in_sum2 / counts in float32."""
    from gguf import GGUFReader

    m = Imatrix({"blk.0.attn_q.weight": np.array([2.0, 4.0, 0.5])}, {"blk.0.attn_q.weight": 2.0}, ["cal.txt"], 3, 512)
    write_imatrix(m, tmp_path / "m.gguf")
    r = GGUFReader(tmp_path / "m.gguf")
    assert r.get_field("general.type").contents() == "imatrix"
    assert r.get_field("imatrix.datasets").contents() == ["cal.txt"]
    assert (r.get_field("imatrix.chunk_count").contents(), r.get_field("imatrix.chunk_size").contents()) == (3, 512)
    shapes = {t.name: t.shape.tolist() for t in r.tensors}
    assert shapes == {"blk.0.attn_q.weight.in_sum2": [3, 1], "blk.0.attn_q.weight.counts": [1, 1]}
    back = read_imatrix(tmp_path / "m.gguf")
    assert back.importance("blk.0.attn_q.weight").tolist() == [1.0, 2.0, 0.25]
    assert back.importance("blk.0.attn_k.weight") is None


def _corrupt(tmp_path, kind):
    path = tmp_path / f"{kind}.gguf"
    good = Imatrix({"a.weight": np.ones(4)}, {"a.weight": 1.0}, ["x"], 1, 8)
    if kind == "garbage":
        path.write_bytes(b"not a gguf at all" * 10)
    elif kind == "truncated":
        write_imatrix(good, path)
        path.write_bytes(path.read_bytes()[:-40])  # into the last tensor's data
    elif kind == "not_imatrix":
        from gguf import GGUFWriter

        w = GGUFWriter(path, "qwen2vl")
        w.add_tensor("x", np.zeros((2, 2), np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    elif kind == "unpaired":
        write_imatrix(Imatrix({"a.weight": np.ones(4)}, {"a.weight": 1.0}, ["x"], 1, 8), path)
        data = path.read_bytes().replace(b"a.weight.counts", b"b.weight.counts")
        path.write_bytes(data)
    elif kind == "nan":
        write_imatrix(Imatrix({"a.weight": np.array([1.0, np.nan])}, {"a.weight": 1.0}, ["x"], 1, 8), path)
    return path


@pytest.mark.parametrize("kind", ["missing", "garbage", "truncated", "not_imatrix", "unpaired", "nan"])
def test_bad_files_are_one_line_naming_the_file(tmp_path, kind):
    path = tmp_path / "absent.gguf" if kind == "missing" else _corrupt(tmp_path, kind)
    with pytest.raises(GGUFError) as info:
        read_imatrix(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_another_model_and_missing_entries_are_refused(tmp_path):
    m = Imatrix({"blk.0.attn_q.weight": np.ones(4)}, {"blk.0.attn_q.weight": 9.0}, ["x"], 1, 8, tmp_path / "m.gguf")
    with pytest.raises(GGUFError, match="another model: blk.0.attn_q.weight has 4 columns.*rows have 8"):
        m.check_model({"blk.0.attn_q.weight": 8})
    with pytest.raises(GGUFError, match="lacks 1 of the model's 2 weights, e.g. blk.0.attn_k.weight"):
        m.check_model({"blk.0.attn_q.weight": 4, "blk.0.attn_k.weight": 4})


@pytest.fixture(scope="module")
def collected(so8t_random_dir):
    from so8t.imatrix.collect import collect_imatrix, read_calibration

    text, name = read_calibration(None)
    return collect_imatrix(so8t_random_dir, text, name, chunk_size=256, progress=False)[0]


def test_collection_covers_every_matrix_with_the_tokens_seen(collected, so8t_random_dir):
    from so8t.gguf.hparams import TextHParams
    from so8t.imatrix.collect import model_matrices
    from so8t.training.data import load_tokenizer

    ckpt_text = TextHParams.from_text(*_text_config(so8t_random_dir))
    collected.check_model(model_matrices(ckpt_text))
    n = len(load_tokenizer(so8t_random_dir).encode(_calibration(), add_special_tokens=False))
    assert set(collected.counts.values()) == {float(n)} and collected.chunk_count == -(-n // 256)


def test_first_layer_input_is_the_normed_embedding(collected, so8t_random_dir):
    """Layer 0's attn_q input, computed here from the raw weights (no gate acts upstream of it)."""
    import torch

    from so8t.checkpoint import CheckpointReader
    from so8t.training.data import load_tokenizer

    ids = load_tokenizer(so8t_random_dir).encode(_calibration(), add_special_tokens=False)
    reader = CheckpointReader(so8t_random_dir)
    e = reader.get("model.embed_tokens.weight").double()[ids]
    w = reader.get("model.layers.0.input_layernorm.weight").double()
    eps = float(_text_config(so8t_random_dir)[0].rms_norm_eps)
    a = e / torch.sqrt(e.pow(2).mean(-1, keepdim=True) + eps) * w
    np.testing.assert_allclose(collected.sums["blk.0.attn_q.weight"], a.pow(2).sum(0).numpy(), rtol=1e-12)


def test_the_gates_change_what_later_layers_see(so8t_random_dir, so8t_identity_dir):
    """Layer 0's input is the same with and without gates, layer 1's is not. On the calibration text's first
    800 characters (one chunk), both sides: a short text tells the two apart as well, and the float64 pass
    over the whole model costs with the tokens (at Qwen2-VL-2B size the plain side on the whole text took
    68 s, both sides on the short text 43 s)."""
    from so8t.imatrix.collect import collect_imatrix

    short = _calibration()[:800]
    gated, plain = (collect_imatrix(d, short, chunk_size=256, progress=False)[0]
                    for d in (so8t_random_dir, so8t_identity_dir))
    np.testing.assert_allclose(plain.sums["blk.0.attn_q.weight"], gated.sums["blk.0.attn_q.weight"], rtol=1e-12)
    assert not np.allclose(plain.sums["blk.1.ffn_up.weight"], gated.sums["blk.1.ffn_up.weight"], rtol=1e-6)


def _calibration() -> str:
    from so8t.imatrix.collect import read_calibration

    return read_calibration(None)[0]


def _text_config(path):
    from so8t.checkpoint.config import read_config

    cfg = read_config(path)
    return cfg.text, cfg.path


@pytest.fixture(scope="module")
def imatrix_export(so8t_random_dir, collected, tmp_path_factory, pytestconfig):
    from so8t.gguf.export import SO8TToGGUFConverter

    out = tmp_path_factory.mktemp("imatrix_export")
    write_imatrix(collected, out / "source.imatrix.gguf")
    report = SO8TToGGUFConverter(so8t_random_dir, progress=False).export(
        out, quant_types=running_types(pytestconfig, IMATRIX_TYPES, LIGHT_TYPES), model_name="imx", mmproj=False,
        sidecar=True, imatrix=out / "source.imatrix.gguf")
    yield {t.quant: t for t in report.texts}
    shutil.rmtree(out)  # gigabytes at a real size: not kept until the session ends


@pytest.mark.llama
@pytest.mark.parametrize("name", per_type(IMATRIX_TYPES, LIGHT_TYPES))
def test_imatrix_files_are_byte_identical_to_llama_quantize(imatrix_export, gguf_text, collected, tmp_path, name):
    """llama_model_quantize, given our F32 file and the same importance vectors through
    ``llama_model_quantize_params.imatrix``, writes the tensors our single-pass export wrote."""
    from so8t.gguf.llama_mix import llama_quantize
    from so8t.gguf.metadata import tensor_digests

    theirs = tmp_path / "theirs.gguf"
    importance = {n: collected.importance(n) for n in collected.sums}
    llama_quantize(gguf_text["F32"].path, theirs, quant.QUANT_TYPES[name].file_type, 2, imatrix=importance)
    assert tensor_digests(imatrix_export[name].path) == tensor_digests(theirs)
    if name in gguf_text:  # the importance really reached the kernels
        assert tensor_digests(gguf_text[name].path) != tensor_digests(theirs)


@pytest.mark.llama
@pytest.mark.parametrize("name", [q.name for q in quant.QUANT_TYPES.values() if q.method is quant.Method.LLAMA])
def test_needs_imatrix_is_what_llama_cpp_refuses(name):
    from so8t.errors import ExportError
    from so8t.gguf.hparams import TextHParams
    from so8t.gguf.llama_mix import llama_mix
    from so8t.gguf.names import text_inventory

    hp = TextHParams(vocab_size=512, hidden_size=256, intermediate_size=512, n_layers=2, n_heads=2, n_kv_heads=1,
                     context_length=256, rms_norm_eps=1e-6, rope_theta=1e4, mrope_section=(16, 24, 24, 0), tied=True)
    inventory = text_inventory(hp.dims, hp.n_layers, hp.tied)
    qt = quant.QUANT_TYPES[name]
    llama_mix(hp, inventory, qt.file_type, imatrix=True)  # every type works with one
    if qt.needs_imatrix:
        with pytest.raises(ExportError):
            llama_mix(hp, inventory, qt.file_type)
    else:
        llama_mix(hp, inventory, qt.file_type)


@pytest.mark.llama
@pytest.mark.heavy
def test_an_iq_file_passes_the_verdict(imatrix_export, so8t_random_dir):
    """The lowest-bit i-quant exported (IQ2_M) passes the whole validator: the block types' verdict
    (suites/test_must_fail.py) with importance-weighted re-encoding. Heavy: the whole validator on one more
    file, 5.6 minutes at Qwen2-VL-2B size (IQ4_XS, measured)."""
    import so8t

    report = so8t.validate(imatrix_export["IQ2_M"].path, so8t_random_dir)
    assert report.overall == "PASS", report.table()


def test_refusal_without_imatrix_is_one_line_naming_the_option(so8t_random_dir, tmp_path, capsys):
    rc = main(["export", "--input-model", str(so8t_random_dir), "--output-dir", str(tmp_path),
               "--quantization", "Q4_K_M,IQ3_XXS", "--no-mmproj", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "IQ3_XXS" in err and "--imatrix" in err
    assert list(tmp_path.iterdir()) == []


def test_empty_calibration_and_foreign_imatrix_leave_nothing(so8t_random_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n")
    out = tmp_path / "out"
    out.mkdir()
    rc = main(["imatrix", "--input-model", str(so8t_random_dir), "--output", str(out / "m.gguf"),
               "--calibration", str(empty), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(empty) in err and "empty" in err and "\n" not in err
    foreign = tmp_path / "foreign.gguf"
    write_imatrix(Imatrix({"blk.0.attn_q.weight": np.ones(7)}, {"blk.0.attn_q.weight": 1.0}, ["x"], 1, 8), foreign)
    rc = main(["export", "--input-model", str(so8t_random_dir), "--output-dir", str(out), "--quantization", "Q4_K_M",
               "--imatrix", str(foreign), "--no-mmproj", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(foreign) in err and "another model" in err and "\n" not in err
    assert list(out.iterdir()) == []
