"""CheckpointReader: both name layouts, shards, dtypes, normalised configs, and every bad input refused.

Tensor values are compared against safetensors' own loader (``safetensors.torch.load_file``), never
against the reader itself; the bad inputs are built by breaking a good checkpoint on disk.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from so8t.checkpoint import CheckpointReader
from so8t.errors import (
    CheckpointError,
    ConfigError,
    HiddenSizeError,
    So8tError,
    UnsafeCheckpointError,
)

FAST = {"tokenizer": False}  # reader tests need no tokenizer files
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"
N_TIED = 2 + 12 * 2 + 7 + 12 * 3  # tensors of the default model (hand count, see test_default_model)


def disk_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every shard, loaded whole by safetensors itself (the oracle)."""
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def assert_names_file(err: So8tError, path: Path) -> None:
    """The error carries the offending file and its message names it."""
    assert err.path == path, (err.path, path)
    assert str(path) in str(err)


# -- reading ----------------------------------------------------------------------------------------------


def test_default_checkpoint_reads_like_safetensors(source_checkpoint):
    reader = CheckpointReader(source_checkpoint)
    expected = disk_tensors(source_checkpoint)
    assert sorted(reader.names()) == sorted(expected)
    for name, tensor in reader.items():
        assert tensor.dtype == expected[name].dtype and torch.equal(tensor, expected[name]), name


def test_transformers5_names_are_canonicalised(checkpoint_variant):
    hub = CheckpointReader(checkpoint_variant(**FAST))
    tf5_dir = checkpoint_variant(layout="transformers5", **FAST)
    tf5 = CheckpointReader(tf5_dir)
    assert (hub.layout, tf5.layout) == ("hub", "transformers5")
    on_disk = disk_tensors(tf5_dir)
    assert any(n.startswith("model.language_model.") for n in on_disk)  # really the other spelling
    assert tf5.names() == hub.names()
    assert not any(n.startswith(("model.language_model.", "model.visual.")) for n in tf5.names())
    for name in hub.names():
        assert torch.equal(tf5.get(name), hub.get(name)), name
    # the transformers-5 spelling is accepted on lookup too
    assert torch.equal(
        tf5.get("model.language_model.layers.1.mlp.down_proj.weight"),
        on_disk["model.language_model.layers.1.mlp.down_proj.weight"],
    )
    assert torch.equal(tf5.get("model.visual.merger.mlp.2.bias"), on_disk["model.visual.merger.mlp.2.bias"])


def test_text_config_is_the_same_for_both_config_spellings(checkpoint_variant):
    hub = CheckpointReader(checkpoint_variant(**FAST))
    tf5_dir = checkpoint_variant(layout="transformers5", **FAST)
    assert "text_config" in json.loads((tf5_dir / "config.json").read_text())
    tf5 = CheckpointReader(tf5_dir)
    keys = [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "max_position_embeddings",
        "rms_norm_eps",
        "rope_theta",
        "mrope_section",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "head_dim",
    ]
    assert {k: hub.text_config[k] for k in keys} == {k: tf5.text_config[k] for k in keys}
    # values as config.json of the hub file states them
    raw = hub.config
    assert list(hub.text_config.mrope_section) == raw["rope_scaling"]["mrope_section"]
    assert hub.text_config["rope_theta"] == raw["rope_theta"]
    assert hub.text_config["rms_norm_eps"] == raw["rms_norm_eps"]
    for key in ("depth", "embed_dim", "num_heads", "patch_size", "spatial_merge_size", "temporal_patch_size"):
        assert hub.vision_config[key] == tf5.vision_config[key] == raw["vision_config"][key]
    assert hub.vision_config["in_channels"] == tf5.vision_config["in_channels"] == 3
    assert hub.vision_config["hidden_size"] == raw["hidden_size"]


@pytest.mark.parametrize("shards", [1, 3])
def test_shard_count_does_not_change_tensors(checkpoint_variant, shards):
    two = CheckpointReader(checkpoint_variant(**FAST))
    other_dir = checkpoint_variant(shards=shards, **FAST)
    other = CheckpointReader(other_dir)
    files = sorted(p.name for p in other.shard_files)
    if shards == 1:
        assert files == ["model.safetensors"]
    else:
        assert len(files) == shards + 1 and INDEX in files
    assert other.names() == two.names()
    for name in two.names():
        assert torch.equal(other.get(name), two.get(name)), name


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_dtypes(checkpoint_variant, dtype):
    bf16 = CheckpointReader(checkpoint_variant(**FAST))
    wide = CheckpointReader(checkpoint_variant(dtype=dtype, **FAST))
    assert bf16.dtype == torch.bfloat16 and wide.dtype == getattr(torch, dtype)
    for name in (
        "model.layers.0.self_attn.o_proj.weight",
        "visual.blocks.2.mlp.fc1.bias",
        "model.norm.weight",
    ):
        tensor = wide.get(name)
        assert tensor.dtype == getattr(torch, dtype)
        if dtype == "float32":  # bf16 is the float32 values rounded once
            assert torch.equal(tensor.to(torch.bfloat16), bf16.get(name))


def test_items_streams_by_prefix_and_untied_has_lm_head(source_checkpoint, untied_checkpoint):
    reader = CheckpointReader(source_checkpoint)
    items = reader.items(prefix="visual.")
    assert iter(items) is items  # a generator, not a materialised dict
    visual = [name for name, _ in items]
    depth = int(reader.vision_config["depth"])  # 7 global vision tensors + 12 per block (hub layout)
    assert len(visual) == 7 + 12 * depth and all(n.startswith("visual.") for n in visual)
    assert visual == sorted(visual, key=lambda n: [int(p) if p.isdigit() else p for p in n.split(".")])
    # tied or not is read off the files themselves (safetensors headers), whatever checkpoint is under test
    stored = set()
    for shard in (p for p in reader.shard_files if p.suffix == ".safetensors"):
        with safe_open(shard, "pt") as handle:
            stored |= set(handle.keys())
    assert reader.tied == ("lm_head.weight" not in stored) == ("lm_head.weight" not in reader)
    untied = CheckpointReader(untied_checkpoint)
    assert not untied.tied and "lm_head.weight" in untied
    assert len(untied) == N_TIED + 1
    assert not torch.equal(untied.get("lm_head.weight"), untied.get("model.embed_tokens.weight"))


def test_shard_and_aux_files(source_checkpoint):
    """Shards as the index names them (or the one ``model.safetensors``), then the index; every
    tokenizer / processor / generation file the directory holds is an aux file, whichever of them it has."""
    reader = CheckpointReader(source_checkpoint)
    index = source_checkpoint / INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values())) + [INDEX]
    else:
        shards = ["model.safetensors"]
    assert [p.name for p in reader.shard_files] == shards
    aux = {p.name for p in reader.aux_files}
    present = {p.name for p in source_checkpoint.iterdir() if p.is_file()}
    known = {
        "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "generation_config.json",
        "preprocessor_config.json", "chat_template.json", "chat_template.jinja",
    }
    assert known & present <= aux <= present
    assert "tokenizer.json" in aux or {"vocab.json", "merges.txt"} <= aux  # a tokenizer is required
    assert "config.json" not in aux
    assert len(reader.preprocessor_config["image_mean"]) == 3


def test_default_model_files():
    """The embedded default model ships every file a hub checkpoint can have (the user-like variant of
    ``so8t.testing.default`` drops vocab.json / merges.txt)."""
    from so8t.testing import default_checkpoint

    reader = CheckpointReader(default_checkpoint("tied"))
    assert [p.name for p in reader.shard_files] == [SHARD1, SHARD2, INDEX]
    aux = {p.name for p in reader.aux_files}
    assert {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"} <= aux
    assert {"generation_config.json", "preprocessor_config.json", "chat_template.json"} <= aux
    assert reader.preprocessor_config["image_mean"] == [0.48145466, 0.4578275, 0.40821073]


# -- refused inputs ---------------------------------------------------------------------------------------


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError) as err:
        CheckpointReader(tmp_path / "nowhere")
    assert_names_file(err.value, tmp_path / "nowhere")


def test_missing_config(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    (path / "config.json").unlink()
    with pytest.raises(ConfigError, match="config.json not found") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / "config.json")


def test_invalid_config_json(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    (path / "config.json").write_text('{"architectures": ["Qwen2VLForConditionalGeneration"],')
    with pytest.raises(ConfigError, match="invalid JSON") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / "config.json")


def test_other_architecture(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)

    def to_llama(c):
        c["architectures"], c["model_type"] = ["LlamaForCausalLM"], "llama"

    edit_json(path / "config.json", to_llama)
    with pytest.raises(ConfigError, match="LlamaForCausalLM is not Qwen2-VL") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / "config.json")


def test_hidden_size_not_divisible_by_8(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    edit_json(path / "config.json", lambda c: c.update(hidden_size=260))
    with pytest.raises(HiddenSizeError, match="260 is not divisible by 8") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / "config.json")


@pytest.mark.parametrize(
    "field", [{"auto_map": {"AutoModel": "modeling_evil.Model"}}, {"trust_remote_code": True}]
)
def test_remote_code_is_refused(tmp_checkpoint, field):
    path = tmp_checkpoint(**FAST)
    edit_json(path / "config.json", lambda c: c.update(field))
    with pytest.raises(UnsafeCheckpointError, match="trust_remote_code") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / "config.json")


class _Tripwire:
    """Unpickling this touches a marker file: proof that a pickle was (not) loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_only_checkpoint_is_refused_unopened(tmp_path, tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    for shard in (SHARD1, SHARD2, INDEX):
        (path / shard).unlink()
    marker = tmp_path / "pickle-was-loaded"
    (path / "pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(marker)))
    with pytest.raises(
        UnsafeCheckpointError, match="pickle checkpoints can execute code; convert to safetensors"
    ):
        CheckpointReader(path)
    assert not marker.exists()


def test_index_listing_a_pickle_is_refused(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    edit_json(path / INDEX, lambda i: i["weight_map"].update({"model.norm.weight": "pytorch_model.bin"}))
    with pytest.raises(UnsafeCheckpointError, match="pickle") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / INDEX)


@pytest.mark.parametrize("target", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_index_entry_leaving_the_directory(tmp_checkpoint, target):
    path = tmp_checkpoint(**FAST)
    edit_json(path / INDEX, lambda i: i["weight_map"].update({"model.norm.weight": target}))
    with pytest.raises(UnsafeCheckpointError, match="outside the checkpoint directory") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / INDEX)


def test_symlinked_shard_escaping_the_directory(tmp_path, tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    outside = tmp_path / "elsewhere.safetensors"
    (path / SHARD2).rename(outside)
    (path / SHARD2).symlink_to(outside)
    with pytest.raises(UnsafeCheckpointError, match="outside the checkpoint directory") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / SHARD2)


def test_hugging_face_cache_snapshot_links_are_accepted(tmp_path, checkpoint_variant):
    """A hub cache snapshot holds symlinks into the repo's blobs/ store: that is not an escape."""
    source = checkpoint_variant(**FAST)
    repo = tmp_path / "models--Qwen--Qwen2-VL-2B-Instruct"
    snapshot, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for i, file in enumerate(sorted(source.iterdir())):
        os.link(file, blobs / f"blob{i}")  # stand-in for the content-addressed blob
        (snapshot / file.name).symlink_to(os.path.relpath(blobs / f"blob{i}", snapshot))
    reader = CheckpointReader(snapshot)
    assert reader.names() == CheckpointReader(source).names()


def test_missing_shard(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    (path / SHARD2).unlink()
    with pytest.raises(CheckpointError, match=f"shard '{SHARD2}' listed in .* is missing") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / SHARD2)


@pytest.mark.parametrize("keep", ["half", "header", 5])
def test_truncated_safetensors(tmp_checkpoint, keep):
    path = tmp_checkpoint(**FAST)
    shard = path / SHARD1
    data = shard.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    cut = {"half": len(data) // 2, "header": header_end - 10, 5: 5}[keep]
    shard.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="truncated safetensors file") as err:
        CheckpointReader(path)
    assert_names_file(err.value, shard)


def test_trailing_garbage_after_tensors(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    with open(path / SHARD2, "ab") as handle:
        handle.write(b"\0" * 16)
    with pytest.raises(CheckpointError, match="bytes after the last tensor") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / SHARD2)


def test_tensor_listed_but_absent(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    edit_json(
        path / INDEX, lambda i: i["weight_map"].update({"model.layers.0.self_attn.extra.weight": SHARD1})
    )
    with pytest.raises(CheckpointError, match="'model.layers.0.self_attn.extra.weight' is listed") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / SHARD1)


def test_invalid_index_json(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    (path / INDEX).write_text("{not json")
    with pytest.raises(CheckpointError, match="invalid JSON") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / INDEX)


def test_config_promising_more_layers_than_stored(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    edit_json(path / "config.json", lambda c: c.update(num_hidden_layers=3))
    with pytest.raises(CheckpointError, match="model.layers.2") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / INDEX)


def test_untied_config_without_lm_head(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    edit_json(path / "config.json", lambda c: c.update(tie_word_embeddings=False))
    with pytest.raises(CheckpointError, match="lm_head.weight is needed"):
        CheckpointReader(path)


def test_unsupported_tensor_dtype(tmp_checkpoint):
    path = tmp_checkpoint(shards=1, **FAST)
    tensors = load_file(path / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"].to(torch.int8)
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(CheckpointError, match="dtype I8") as err:
        CheckpointReader(path)
    assert_names_file(err.value, path / "model.safetensors")


def test_no_weights_at_all(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    for shard in (SHARD1, SHARD2, INDEX):
        (path / shard).unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors") as err:
        CheckpointReader(path)
    assert not isinstance(err.value, UnsafeCheckpointError)


def test_tensors_own_their_memory(tmp_checkpoint):
    """get() copies the bytes out: rewriting the file afterwards does not change a tensor already read."""
    path = tmp_checkpoint(shards=1, **FAST)
    reader = CheckpointReader(path)
    before = reader.get("model.norm.weight")
    kept = before.clone()
    entry = reader.entry("model.norm.weight")
    with open(path / "model.safetensors", "r+b") as handle:
        handle.seek(entry.begin)
        handle.write(b"\0" * entry.nbytes)
    assert torch.equal(before, kept)
    assert torch.equal(reader.get("model.norm.weight"), torch.zeros_like(kept))


def test_checkpoint_saved_by_transformers_reads_the_same(tmp_path, untied_checkpoint):
    """transformers 5 ``save_pretrained`` writes a nested config (text_config, rope_parameters) and its own
    shard split; the reader must see the same model."""
    from transformers import Qwen2VLForConditionalGeneration

    model = Qwen2VLForConditionalGeneration.from_pretrained(untied_checkpoint, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "saved", max_shard_size="50MB")
    assert "text_config" in json.loads((tmp_path / "saved" / "config.json").read_text())
    saved, source = CheckpointReader(tmp_path / "saved"), CheckpointReader(untied_checkpoint)
    assert len(saved.shard_files) > 2 and saved.names() == source.names()
    for name in source.names():
        assert torch.equal(saved.get(name), source.get(name)), name
    keys = [
        "hidden_size",
        "num_hidden_layers",
        "num_key_value_heads",
        "rms_norm_eps",
        "rope_theta",
        "mrope_section",
    ]
    assert {k: saved.text_config[k] for k in keys} == {k: source.text_config[k] for k in keys}
    assert saved.tied is False and saved.vision_config["depth"] == source.vision_config["depth"]


def test_shard_in_a_subdirectory_is_inside(tmp_checkpoint):
    path = tmp_checkpoint(**FAST)
    expected = load_file(path / SHARD2)
    (path / "weights").mkdir()
    (path / SHARD2).rename(path / "weights" / SHARD2)
    edit_json(
        path / INDEX,
        lambda i: i["weight_map"].update(
            {k: f"weights/{v}" for k, v in i["weight_map"].items() if v == SHARD2}
        ),
    )
    reader = CheckpointReader(path)
    assert path / "weights" / SHARD2 in reader.shard_files
    for name, tensor in expected.items():
        assert torch.equal(reader.get(name), tensor), name


def test_lazy_rows_read_only_the_rows_sliced(source_checkpoint, monkeypatch):
    """``LazyRows`` (the export's embedding): slices equal the stored rows, read then and only then."""
    from so8t.checkpoint.lazy_rows import LazyRows, tensor_or_rows

    reader = CheckpointReader(source_checkpoint)
    name = "model.embed_tokens.weight"
    whole = load_file(str(reader.entry(name).file))[reader.entry(name).name]
    assert isinstance(tensor_or_rows(reader, name, lazy_above=0), LazyRows)
    assert torch.equal(tensor_or_rows(reader, name, lazy_above=None), whole)
    reads = []
    real = CheckpointReader.get_rows
    monkeypatch.setattr(CheckpointReader, "get_rows", lambda self, n, a, b: reads.append((a, b)) or real(self, n, a, b))
    rows = LazyRows(reader, name)
    assert reads == [] and tuple(rows.shape) == tuple(whole.shape) and rows.dtype == whole.dtype
    assert torch.equal(rows[5:9], whole[5:9]) and torch.equal(rows[-3:], whole[-3:])
    assert reads == [(5, 9), (whole.shape[0] - 3, whole.shape[0])]
    with pytest.raises(TypeError, match="sliced by rows"):
        rows[3]
    with pytest.raises(ValueError, match="contiguous"):
        rows[0:10:2]
