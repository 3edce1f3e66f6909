"""Export failures leave nothing behind and explain themselves; the CLI names outputs as documented."""

from __future__ import annotations

import itertools
import json

import pytest

from so8t.errors import ExportError, QuantTypeError, So8tError


class Boom(RuntimeError):
    pass


def _fail_after(monkeypatch, target: str, calls: int, exc=Boom):
    import importlib

    module_name, attr = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    original = getattr(module, attr)
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise exc("injected failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, attr, wrapper)
    return count


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_interrupted_text_pass_leaves_no_file(so8t_random_dir, tmp_path, monkeypatch, exc):
    from so8t.gguf.export import SO8TToGGUFConverter

    count = _fail_after(monkeypatch, "so8t.gguf.quant.encode", calls=20, exc=exc)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(exc):
        SO8TToGGUFConverter(so8t_random_dir, progress=False).export(
            out, ["F16", "Q8_0", "Q6_K"], model_name="m"
        )
    assert count["n"] > 20, "the failure was injected mid-write"
    assert list(out.iterdir()) == []


def test_failure_in_ggml_quantizer_removes_every_output(so8t_random_dir, tmp_path, monkeypatch):
    from so8t.gguf.export import SO8TToGGUFConverter

    count = _fail_after(monkeypatch, "so8t.gguf.ggml_kernels.quantize", calls=3)
    with pytest.raises(Boom):
        SO8TToGGUFConverter(so8t_random_dir, progress=False).export(
            tmp_path, ["F16", "Q4_K_M"], model_name="m"
        )
    assert count["n"] > 3, "the failure was injected mid-write"
    assert list(tmp_path.iterdir()) == []


def test_existing_output_survives_a_failed_export(so8t_random_dir, tmp_path, monkeypatch):
    from so8t.gguf.export import SO8TToGGUFConverter

    final = tmp_path / "model.gguf"
    final.write_bytes(b"previous")
    _fail_after(monkeypatch, "so8t.gguf.quant.encode", calls=5)
    with pytest.raises(Boom):
        SO8TToGGUFConverter(so8t_random_dir, progress=False).export(
            final, ["F16"], mmproj=False, sidecar=False
        )
    assert final.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]


def test_q8_k_is_rejected_with_the_reason(so8t_random_dir, tmp_path, capsys):
    from so8t.cli import main

    rc = main(
        [
            "export",
            "--input-model",
            str(so8t_random_dir),
            "--output-dir",
            str(tmp_path / "o"),
            "--quantization",
            "Q8_0,q8_k",
        ]
    )
    err = capsys.readouterr().err
    assert rc != 0
    assert "Q8_K" in err and "activation" in err and "Q8_0" in err and "Q6_K" in err
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


def test_unknown_type_lists_supported_ones():
    from so8t.gguf.quant import parse_quant_types

    with pytest.raises(QuantTypeError, match="Q4_K_M"):
        parse_quant_types(["Q3_XL"])


def test_missing_output_directory(so8t_random_dir, tmp_path):
    from so8t.gguf.export import SO8TToGGUFConverter

    with pytest.raises(So8tError, match="does not exist"):
        SO8TToGGUFConverter(so8t_random_dir, progress=False).export(tmp_path / "nope" / "m.gguf", ["F16"])


def test_not_a_checkpoint(tmp_path):
    from so8t.gguf.export import SO8TToGGUFConverter

    with pytest.raises(So8tError, match="config.json"):
        SO8TToGGUFConverter(tmp_path)


def _write(tensors, tmp_path, so8t_random_dir):
    from so8t.gguf import metadata, quant, text
    from so8t.gguf.tokenizer import read_tokenizer

    config = json.loads((so8t_random_dir / "config.json").read_text())
    hp = text.TextHParams.from_config(config)
    tok = read_tokenizer(so8t_random_dir, hp.vocab_size)
    outputs = {"F16": (quant.QUANT_TYPES["F16"], tmp_path / "x.gguf")}
    return text.write_text_ggufs(tensors, hp, tok, outputs, metadata.so8t_keys(config), "x", progress=False)


def test_stream_with_unknown_missing_or_misshapen_tensor(embedded_random_dir, tmp_path):
    """The writer's own checks, whatever the model (``embedded_random_dir``: suites/fixtures/conversions.py)."""
    import torch

    from so8t.fold import iter_folded_tensors

    def tensors():  # a fresh stream each time: one tensor in memory, as in an export
        return iter_folded_tensors(embedded_random_dir, part="text")

    extra = [("model.layers.0.self_attn.rotary.weight", torch.zeros(3))]
    with pytest.raises(ExportError, match="unexpected text tensor"):
        _write(itertools.chain(tensors(), extra), tmp_path, embedded_random_dir)
    with pytest.raises(ExportError, match="missing"):
        _write((t for t in tensors() if "layers.1.mlp.up_proj" not in t[0]), tmp_path, embedded_random_dir)
    bad = ((n, t[:-1] if n.endswith("o_proj.weight") else t) for n, t in tensors())
    with pytest.raises(ExportError, match="shape"):
        _write(bad, tmp_path, embedded_random_dir)


def test_cli_export_names_outputs(embedded_random_dir, tmp_path, capsys):
    """The CLI's naming rule, whatever the model (``embedded_random_dir``: suites/fixtures/conversions.py)."""
    from so8t.cli import main
    from so8t.gguf.metadata import read_gguf

    rc = main(
        [
            "export",
            "--input-model",
            str(embedded_random_dir),
            "--output-gguf",
            str(tmp_path / "m.gguf"),
            "--quantization",
            "Q8_0",
            "--quantization",
            "f16",
            "--model-name",
            "demo",
            "--no-mmproj",
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.name for p in tmp_path.iterdir())
    # the text files and their sidecars, and the bundle (so8t/bundle/): Modelfile, model card, sums
    assert names == ["Modelfile", "README.md", "SHA256SUMS", "m-F16.gguf", "m-F16.so8t.gguf", "m-Q8_0.gguf",
                     "m-Q8_0.so8t.gguf"]
    assert read_gguf(tmp_path / "m-Q8_0.gguf").kv["general.name"] == "demo"


def test_mmproj_failure_removes_every_output(so8t_random_dir, tmp_path, monkeypatch):
    """The mmproj is written on its own thread during the text pass: its error still fails the export,
    and neither it nor the text files are left."""
    from so8t.gguf.export import SO8TToGGUFConverter

    count = _fail_after(monkeypatch, "so8t.gguf.vision._export_array", calls=3, exc=ExportError)
    with pytest.raises(ExportError, match="injected failure"):
        SO8TToGGUFConverter(so8t_random_dir, progress=False).export(tmp_path, ["F16", "Q8_0"], model_name="m")
    assert count["n"] > 3, "the failure was injected mid-write"
    assert list(tmp_path.iterdir()) == []


def test_bad_mmproj_input_fails_before_the_text_pass(so8t_random_dir, tmp_path, monkeypatch):
    """What can be checked of the vision tower without its data is checked before the long text pass."""
    from so8t.gguf.export import SO8TToGGUFConverter

    count = _fail_after(monkeypatch, "so8t.gguf.text.write_text_ggufs", calls=10**9)
    with pytest.raises(ExportError, match="mmproj dtype"):
        SO8TToGGUFConverter(so8t_random_dir, progress=False).export(tmp_path, ["F16"], mmproj_dtype="q8_0")
    assert count["n"] == 0, "the text pass started before the mmproj input was checked"
    assert list(tmp_path.iterdir()) == []


def test_a_failed_mmproj_stops_the_text_pass_early(so8t_random_dir, tmp_path, monkeypatch):
    """The mmproj's error is raised between two text tensors, not after the whole text pass."""
    import time

    from so8t.gguf import text
    from so8t.gguf.export import SO8TToGGUFConverter
    from so8t.gguf.names import text_inventory

    _fail_after(monkeypatch, "so8t.gguf.vision._export_array", calls=0, exc=ExportError)
    streamed = []
    real = text._stream_rows

    def slow(tensor, spec, files):  # a text pass long enough to see where it stopped
        streamed.append(spec.gguf_name)
        time.sleep(0.05)
        return real(tensor, spec, files)

    monkeypatch.setattr(text, "_stream_rows", slow)
    converter = SO8TToGGUFConverter(so8t_random_dir, progress=False)
    with pytest.raises(ExportError, match="injected failure"):
        converter.export(tmp_path, ["F16"], model_name="m")
    hp = converter.hparams
    total = len(text_inventory(hp.dims, hp.n_layers, hp.tied))
    assert len(streamed) < total / 2, f"the text pass streamed {len(streamed)} of {total} tensors"
    assert list(tmp_path.iterdir()) == []
