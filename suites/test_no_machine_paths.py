"""No shipped file carries a path of the machine that made it.

The source checkpoint, the SO8T checkpoint and the output directory all sit deep inside one temporary
directory; after ``so8t convert`` and ``so8t export`` (text, mmproj, sidecar), no output file holds the
bytes of that directory's path (nor of its resolved form). ``so8t.source_model`` names the source model
by its directory's base name in both the text file and the sidecar.
"""

from __future__ import annotations

import shutil

import pytest

from so8t.gguf.metadata import read_gguf


@pytest.fixture(scope="module")
def deep_export(tmp_path_factory, source_checkpoint):
    from so8t.conversion import Qwen2VLToSO8TConverter
    from so8t.gguf.export import SO8TToGGUFConverter

    root = tmp_path_factory.mktemp("machine-path")
    deep = root.joinpath("home", "exporter", "private", "projects", "deep")
    source = shutil.copytree(source_checkpoint, deep / "models" / "my-qwen2-vl")
    so8t_dir = Qwen2VLToSO8TConverter(
        source, rotation_init="random", seed=3, safety_features=True, progress=False
    ).convert(deep / "my-so8t")
    out = deep / "out"
    out.mkdir()
    SO8TToGGUFConverter(so8t_dir, progress=False).export(out, quant_types=["F16", "Q8_0"], model_name="m")
    return root, out


def test_outputs_are_text_mmproj_and_sidecars(deep_export):
    _, out = deep_export
    names = sorted(p.name for p in out.iterdir())
    assert names == ["m-F16.gguf", "m-F16.so8t.gguf", "m-Q8_0.gguf", "m-Q8_0.so8t.gguf", "mmproj-m-f16.gguf"]


def test_no_output_holds_the_export_directory_path(deep_export):
    root, out = deep_export
    needles = {str(root).encode(), str(root.resolve()).encode()}
    for path in sorted(out.iterdir()):
        data = path.read_bytes()
        found = [n.decode() for n in needles if n in data]
        assert not found, f"{path.name} holds the machine path {found}"


def test_source_model_is_the_source_directory_name(deep_export):
    _, out = deep_export
    for name in ("m-F16.gguf", "m-F16.so8t.gguf", "m-Q8_0.gguf", "m-Q8_0.so8t.gguf"):
        assert read_gguf(out / name).kv["so8t.source_model"] == "my-qwen2-vl", name
