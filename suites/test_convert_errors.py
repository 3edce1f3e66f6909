"""Bad input to ``Qwen2VLToSO8TConverter`` / ``so8t convert``: a typed error naming the file, a one-line
CLI message with exit code 2, and nothing left at (or beside) the output path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from so8t.conversion import Qwen2VLToSO8TConverter
from so8t.errors import (
    CheckpointError,
    ConfigError,
    HiddenSizeError,
    RotationDimError,
    So8tError,
    UnsafeCheckpointError,
)

INDEX = "model.safetensors.index.json"
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


def _edit_config(ckpt: Path, **changes) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    config.update(changes)
    (ckpt / "config.json").write_text(json.dumps(config))


def missing_config(ckpt: Path) -> str:
    (ckpt / "config.json").unlink()
    return "config.json"


def not_qwen2vl(ckpt: Path) -> str:
    _edit_config(ckpt, architectures=["LlamaForCausalLM"], model_type="llama")
    return "config.json"


def hidden_not_divisible_by_8(ckpt: Path) -> str:
    _edit_config(ckpt, hidden_size=252)  # 2 heads of 126: a valid transformer, not SO(8)-blockable
    return "config.json"


def shard_missing(ckpt: Path) -> str:
    (ckpt / SHARD2).unlink()
    return SHARD2


def truncated_shard(ckpt: Path) -> str:
    path = ckpt / SHARD1
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size - 1000)
    return SHARD1


def bin_only(ckpt: Path) -> str:
    for path in list(ckpt.glob("*.safetensors")) + [ckpt / INDEX]:
        path.unlink()
    (ckpt / "pytorch_model.bin").write_bytes(b"PK\x03\x04 pickle data that must never be loaded")
    return "pytorch_model.bin"


def index_escapes(ckpt: Path) -> str:
    index = json.loads((ckpt / INDEX).read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../outside.safetensors"
    (ckpt / INDEX).write_text(json.dumps(index))
    return "../outside.safetensors"


#: case -> (break the checkpoint, converter options, CLI flags, error type)
CASES = {
    "missing config.json": (missing_config, {}, [], ConfigError),
    "not Qwen2-VL": (not_qwen2vl, {}, [], ConfigError),
    "hidden % 8 != 0": (hidden_not_divisible_by_8, {}, [], HiddenSizeError),
    "rotation dim 4": (None, {"rotation_dim": 4}, ["--rotation-dim", "4"], RotationDimError),
    "shard missing": (shard_missing, {}, [], CheckpointError),
    "truncated shard": (truncated_shard, {}, [], CheckpointError),
    ".bin only": (bin_only, {}, [], UnsafeCheckpointError),
    "index escapes": (index_escapes, {}, [], UnsafeCheckpointError),
    "hidden size flag mismatch": (None, {"hidden_size": 1536}, ["--hidden-size", "1536"], HiddenSizeError),
}


@pytest.fixture(scope="module")
def base_checkpoint(checkpoint_variant) -> Path:
    return checkpoint_variant(vocab_size=1024)  # two shards + index, hub layout


@pytest.fixture
def broken(base_checkpoint, tmp_path, request):
    """(checkpoint copy broken per case, the file name the error must mention, case spec)."""
    breaker, options, flags, error = CASES[request.param]
    ckpt = tmp_path / "source"
    shutil.copytree(base_checkpoint, ckpt)
    if breaker is None:
        named = "rotation" if "rotation_dim" in options else "config.json"
    else:
        named = breaker(ckpt)
    return ckpt, named, options, flags, error


def _nothing_at(out: Path) -> bool:
    return not out.exists() and not any(p.name.startswith(f".{out.name}") for p in out.parent.iterdir())


@pytest.mark.parametrize("broken", sorted(CASES), indirect=True)
def test_api_raises_a_typed_error(broken, tmp_path):
    ckpt, named, options, _, error = broken
    out = tmp_path / "out"
    with pytest.raises(error) as info:
        Qwen2VLToSO8TConverter(ckpt, progress=False, **options).convert(out)
    assert named in str(info.value)
    assert _nothing_at(out)


@pytest.mark.parametrize("broken", sorted(CASES), indirect=True)
def test_cli_exits_2_with_one_line(broken, tmp_path, capsys):
    from so8t.cli import main

    ckpt, named, _, flags, _ = broken
    out = tmp_path / "out"
    code = main(["convert", "--input-model", str(ckpt), "--output-model", str(out), "--no-progress", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("so8t convert: error:")
    assert named in err
    assert _nothing_at(out)


def test_failure_while_writing_leaves_nothing(base_checkpoint, tmp_path, monkeypatch):
    """An error after the shards were copied (here: saving the gates) removes the partial directory."""
    import so8t.conversion as convert_module

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_module, "save_file", boom)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        Qwen2VLToSO8TConverter(base_checkpoint, progress=False).convert(out)
    assert _nothing_at(out)


def test_existing_output_is_replaced_only_on_success(base_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    import so8t.conversion as convert_module

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert_module, "save_file", disk_full)
    with pytest.raises(So8tError, match="No space"):
        Qwen2VLToSO8TConverter(base_checkpoint, progress=False).convert(out)
    assert (out / "keep.txt").read_text() == "old"  # the old output survives a failed run


def test_output_inside_input_is_refused(base_checkpoint):
    with pytest.raises(So8tError, match="inside"):
        Qwen2VLToSO8TConverter(base_checkpoint, progress=False).convert(base_checkpoint / "so8t")
    assert not (base_checkpoint / "so8t").exists()


def test_converting_an_so8t_checkpoint_again_is_refused(so8t_identity_dir, tmp_path):
    with pytest.raises(ConfigError, match="already an SO8T checkpoint"):
        Qwen2VLToSO8TConverter(so8t_identity_dir, progress=False)


@pytest.mark.parametrize(
    ("options", "message"), [({"rotation_init": "haar"}, "rotation init"), ({"map": "qr"}, "rotation map")]
)
def test_unknown_init_or_map(base_checkpoint, options, message):
    with pytest.raises(So8tError, match=message):
        Qwen2VLToSO8TConverter(base_checkpoint, progress=False, **options)


def test_cli_converts_the_default_checkpoint(source_checkpoint, tmp_path):
    """The installed ``so8t convert`` entry point, end to end in a subprocess."""
    import subprocess
    import sys

    out = tmp_path / "so8t"
    cmd = [
        sys.executable,
        "-m",
        "so8t.cli",
        "convert",
        "--input-model",
        str(source_checkpoint),
        "--output-model",
        str(out),
        "--safety-features",
        "--rotation-init",
        "random",
        "--seed",
        "3",
    ]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["so8t"]["seed"] == 3 and config["so8t"]["safety_head"] is True
