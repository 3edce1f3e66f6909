"""config.json rules (``so8t.checkpoint.config`` and ``config_rules``): one test per rule.

Each broken checkpoint is refused when opened (``CheckpointReader``, so by ``so8t convert`` and every
other command) with a typed error, and by the ``so8t convert`` CLI with exit code 2 and ONE line that
names the config field and the file(s) concerned.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from so8t.checkpoint import CheckpointReader
from so8t.errors import CheckpointError, ConfigError, HiddenSizeError

FAST = {"tokenizer": False, "vocab_size": 1024}
SHARD1 = "model-00001-of-00002.safetensors"
INDEX = "model.safetensors.index.json"


def edit_config(path: Path, change) -> None:
    data = json.loads((path / "config.json").read_text())
    change(data)
    (path / "config.json").write_text(json.dumps(data))


def refused(ckpt: Path, error: type, *named: str, tmp_path: Path, capsys) -> None:
    """The reader raises ``error`` and the convert CLI prints one line; both name every string of ``named``."""
    from so8t.cli import main

    with pytest.raises(error) as info:
        CheckpointReader(ckpt)
    for text in named:
        assert text in str(info.value), (text, str(info.value))
    code = main(
        ["convert", "--input-model", str(ckpt), "--output-model", str(tmp_path / "out"), "--no-progress"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("so8t convert: error:"), err
    for text in named:
        assert text in err, (text, err)
    assert not (tmp_path / "out").exists()


def test_the_default_checkpoint_satisfies_every_rule(source_checkpoint):
    reader = CheckpointReader(source_checkpoint)
    assert reader.text_config.hidden_size % 8 == 0 and reader.model_config.dtype == "bfloat16"


@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        ("text", "hidden_size", 0),
        ("text", "vocab_size", -5),
        ("text", "num_hidden_layers", 0),
        ("text", "intermediate_size", "512"),
        ("text", "max_position_embeddings", 0),
        ("text", "num_key_value_heads", -1),
        ("vision", "depth", 0),
        ("vision", "patch_size", 0),
        ("vision", "temporal_patch_size", 1.5),
    ],
)
def test_sizes_and_counts_are_positive_integers(tmp_checkpoint, tmp_path, capsys, where, field, value):
    ckpt = tmp_checkpoint(**FAST)
    edit_config(ckpt, lambda c: (c if where == "text" else c["vision_config"]).update({field: value}))
    refused(ckpt, ConfigError, field, "config.json", tmp_path=tmp_path, capsys=capsys)


@pytest.mark.parametrize(
    ("where", "field", "value"),
    [
        ("text", "rms_norm_eps", 0.0),
        ("text", "rms_norm_eps", -1e-6),
        ("text", "rope_theta", math.inf),
        ("text", "rope_theta", math.nan),
        ("vision", "layer_norm_eps", 0.0),
    ],
)
def test_eps_and_rope_base_are_finite_and_positive(tmp_checkpoint, tmp_path, capsys, where, field, value):
    ckpt = tmp_checkpoint(**FAST)
    edit_config(ckpt, lambda c: (c if where == "text" else c["vision_config"]).update({field: value}))
    refused(ckpt, ConfigError, field, "config.json", tmp_path=tmp_path, capsys=capsys)


def test_hidden_size_splits_into_so8_blocks(tmp_checkpoint, tmp_path, capsys):
    ckpt = tmp_checkpoint(**FAST)
    edit_config(ckpt, lambda c: c.update(hidden_size=252))
    refused(ckpt, HiddenSizeError, "hidden_size 252", "config.json", tmp_path=tmp_path, capsys=capsys)


@pytest.mark.parametrize(("field", "value"), [("num_attention_heads", 3), ("num_key_value_heads", 3)])
def test_heads_divide_the_hidden_size_and_kv_heads_divide_heads(
    tmp_checkpoint, tmp_path, capsys, field, value
):
    ckpt = tmp_checkpoint(**FAST)
    edit_config(ckpt, lambda c: c.update({field: value}))
    refused(ckpt, ConfigError, "heads are inconsistent", "config.json", tmp_path=tmp_path, capsys=capsys)


def test_mrope_section_sums_to_half_the_head_dim(tmp_checkpoint, tmp_path, capsys):
    ckpt = tmp_checkpoint(**FAST)
    edit_config(ckpt, lambda c: c["rope_scaling"].update(mrope_section=[16, 24, 16]))
    refused(ckpt, ConfigError, "mrope_section", "config.json", tmp_path=tmp_path, capsys=capsys)


def test_vision_heads_divide_the_embedding(tmp_checkpoint, tmp_path, capsys):
    ckpt = tmp_checkpoint(**FAST)
    edit_config(ckpt, lambda c: c["vision_config"].update(num_heads=3))
    refused(ckpt, ConfigError, "num_heads 3", "config.json", tmp_path=tmp_path, capsys=capsys)


def test_merger_output_is_the_text_hidden_size(tmp_checkpoint, tmp_path, capsys):
    ckpt = tmp_checkpoint(**FAST)
    edit_config(ckpt, lambda c: c["vision_config"].update(hidden_size=512))
    refused(
        ckpt, ConfigError, "vision_config.hidden_size 512", "config.json", tmp_path=tmp_path, capsys=capsys
    )


def test_every_implied_tensor_is_present(tmp_checkpoint, tmp_path, capsys):
    ckpt = tmp_checkpoint(**FAST)
    edit_config(ckpt, lambda c: c["vision_config"].update(depth=4))
    refused(ckpt, CheckpointError, "visual.blocks.3", INDEX, tmp_path=tmp_path, capsys=capsys)


def _add_tensor(ckpt: Path, name: str) -> None:
    tensors = load_file(ckpt / "model.safetensors")
    tensors[name] = tensors["model.norm.weight"].clone()
    save_file(tensors, ckpt / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("variant", "change", "named"),
    [
        ({}, lambda c: c.update(num_hidden_layers=1), ("num_hidden_layers is 1", "model.layers.1.")),
        ({}, lambda c: c["vision_config"].update(depth=2), ("vision_config.depth is 2", "visual.blocks.2.")),
        (
            {"tied": False},
            lambda c: c.update(tie_word_embeddings=True),
            ("tie_word_embeddings", "lm_head.weight"),
        ),
        ({"shards": 1}, "model.layers.0.extra.weight", ("no field", "model.layers.0.extra.weight")),
    ],
    ids=["layer", "vision block", "lm_head when tied", "unknown"],
)
def test_no_tensor_the_config_does_not_imply(tmp_checkpoint, tmp_path, capsys, variant, change, named):
    ckpt = tmp_checkpoint(**FAST, **variant)
    if callable(change):
        edit_config(ckpt, change)
    else:
        _add_tensor(ckpt, change)
    shard = "model.safetensors" if variant.get("shards") == 1 else "model-0000"
    refused(ckpt, ConfigError, *named, shard, "config.json", tmp_path=tmp_path, capsys=capsys)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c.update(intermediate_size=1024), "intermediate_size"),
        (lambda c: c.update(vocab_size=2048), "vocab_size"),
        (lambda c: c.update(num_key_value_heads=2), "num_key_value_heads * head_dim"),
        (lambda c: c["vision_config"].update(patch_size=16), "vision_config.patch_size"),
        (lambda c: c["vision_config"].update(mlp_ratio=2), "vision_config.embed_dim * mlp_ratio"),
    ],
    ids=["ffn", "vocab", "kv", "patch", "mlp ratio"],
)
def test_every_tensor_has_the_implied_shape(tmp_checkpoint, tmp_path, capsys, change, field):
    ckpt = tmp_checkpoint(**FAST)
    edit_config(ckpt, change)
    refused(
        ckpt, ConfigError, field, "the shape", ".safetensors", "config.json", tmp_path=tmp_path, capsys=capsys
    )


def test_every_tensor_has_the_stated_dtype(tmp_checkpoint, tmp_path, capsys):
    ckpt = tmp_checkpoint(**FAST)
    edit_config(ckpt, lambda c: c.update(torch_dtype="float16"))
    refused(
        ckpt,
        ConfigError,
        "torch_dtype is float16",
        "as bfloat16",
        "config.json",
        tmp_path=tmp_path,
        capsys=capsys,
    )
