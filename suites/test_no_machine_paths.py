"""No shipped file carries a path of the machine that made it.

The source checkpoint, the SO8T checkpoint and the output directory all sit deep inside one temporary
directory; after ``so8t.convert`` and ``so8t.export_gguf`` (text, mmproj, sidecar), no file written
(the SO8T checkpoint's config.json and gates, every exported file) holds the bytes of that directory's
path (nor of its resolved form). ``so8t.source_model`` names the source model by its directory's base name
in both the text file and the sidecar, and config.json's ``so8t.source.name`` does the same.
"""

from __future__ import annotations

import os
import shutil

import pytest

from so8t.gguf.metadata import read_gguf


@pytest.fixture(scope="module")
def deep_export(tmp_path_factory, embedded_checkpoint):
    """The embedded model on any gate: a path can only reach a file through the tool's code, whatever the
    checkpoint (on --so8t-model at Qwen2-VL-2B size this was a 46 s export and 6 GB of disk at the gate's
    peak)."""
    import so8t

    root = tmp_path_factory.mktemp("machine-path")
    deep = root.joinpath("home", "exporter", "private", "projects", "deep")
    # hard links: the bytes are the embedded model's, only the path is deep
    source = shutil.copytree(embedded_checkpoint, deep / "models" / "my-qwen2-vl", copy_function=os.link)
    so8t_dir = so8t.convert(
        source, deep / "my-so8t", rotation_init="random", seed=3, safety_features=True, link_weights=True,
        progress=False,
    ).path
    out = deep / "out"
    out.mkdir()
    so8t.export_gguf(so8t_dir, out, quant_types=["F16", "Q8_0"], model_name="m", progress=False)
    yield root, out, so8t_dir
    shutil.rmtree(root)


def _machine_paths(root, path) -> list[str]:
    data = path.read_bytes()
    return [n for n in {str(root), str(root.resolve())} if n.encode() in data]


def test_outputs_are_text_mmproj_sidecars_and_bundle(deep_export):
    """Every file the next test scans: the GGUFs and the bundle (Modelfile, model card, sums)."""
    _, out, _ = deep_export
    names = sorted(p.name for p in out.iterdir())
    assert names == ["Modelfile", "README.md", "SHA256SUMS", "m-F16.gguf", "m-F16.so8t.gguf", "m-Q8_0.gguf",
                     "m-Q8_0.so8t.gguf", "mmproj-m-f16.gguf"]


def test_no_output_holds_the_export_directory_path(deep_export):
    root, out, _ = deep_export
    for path in sorted(out.iterdir()):
        assert not _machine_paths(root, path), f"{path.name} holds the machine path {_machine_paths(root, path)}"


def test_no_so8t_checkpoint_file_holds_the_machine_path(deep_export):
    root, _, so8t_dir = deep_export
    written = sorted(so8t_dir.iterdir())
    assert {"config.json", "so8t_gates.safetensors"} <= {p.name for p in written}
    for path in written:
        assert not _machine_paths(root, path), f"{path.name} holds the machine path {_machine_paths(root, path)}"


def test_config_names_the_source_by_its_directory_name(deep_export):
    import json

    _, _, so8t_dir = deep_export
    source = json.loads((so8t_dir / "config.json").read_text())["so8t"]["source"]
    assert source["name"] == "my-qwen2-vl" and "path" not in source


def test_source_model_is_the_source_directory_name(deep_export):
    _, out, _ = deep_export
    for name in ("m-F16.gguf", "m-F16.so8t.gguf", "m-Q8_0.gguf", "m-Q8_0.so8t.gguf"):
        assert read_gguf(out / name).kv["so8t.source_model"] == "my-qwen2-vl", name
