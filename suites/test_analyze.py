"""``so8t analyze``: the numbers agree with parameter counts worked out from the architecture by hand."""

from __future__ import annotations

import dataclasses
import json

import pytest

from so8t.analyze import analyze_checkpoint
from so8t.cli import main


def expected_text_params(t: dict) -> int:
    """Qwen2 decoder: embeddings, per layer 2 norms + q/k/v (with biases) + o + gate/up/down, final norm."""
    h, i, v = t["hidden_size"], t["intermediate_size"], t["vocab_size"]
    kv = t["num_key_value_heads"] * (h // t["num_attention_heads"])
    layer = 2 * h + (h * h + h) + 2 * (kv * h + kv) + h * h + 3 * h * i
    lm_head = 0 if t["tie_word_embeddings"] else v * h
    return v * h + t["num_hidden_layers"] * layer + h + lm_head


def expected_vision_params(vc: dict, text_hidden: int) -> int:
    """Patch Conv3d (no bias), blocks (2 LayerNorms, qkv, proj, fc1, fc2), merger (LayerNorm + 2-layer MLP)."""
    e, m = vc["embed_dim"], vc["spatial_merge_size"] ** 2
    patch = e * 3 * vc["temporal_patch_size"] * vc["patch_size"] ** 2
    hidden_mlp = e * vc["mlp_ratio"]
    block = 4 * e + (3 * e * e + 3 * e) + (e * e + e) + (hidden_mlp * e + hidden_mlp) + (e * hidden_mlp + e)
    merger = 2 * e + (m * e * m * e + m * e) + (m * e * text_hidden + text_hidden)
    return patch + vc["depth"] * block + merger


def test_analysis_matches_the_architecture(source_reader):
    result = analyze_checkpoint(source_reader.path)
    text = {**dataclasses.asdict(source_reader.text_config), "tie_word_embeddings": source_reader.tied}
    assert result["architecture"] == "Qwen2VLForConditionalGeneration"
    assert result["hidden_size"] == text["hidden_size"]
    assert result["params_text"] == expected_text_params(text)
    assert result["params_vision"] == expected_vision_params(source_reader.vision_config, text["hidden_size"])
    assert result["params_total"] == result["params_text"] + result["params_vision"]
    on_disk = sum(p.stat().st_size for p in source_reader.path.iterdir() if p.is_file())
    assert result["total_bytes"] == on_disk


def test_default_model_numbers(source_checkpoint, request):
    if request.config.getoption("--so8t-model"):
        pytest.skip("fixed numbers of the embedded default model; --so8t-model gates another checkpoint")
    result = analyze_checkpoint(source_checkpoint)
    # Worked out by hand for hidden 256, intermediate 512, 2 layers, 2 heads, 1 KV head, vocab 151936.
    assert result["params_text"] == 151936 * 256 + 2 * 590848 + 256 == 40_077_568
    assert (result["num_layers"], result["num_key_value_heads"], result["vision_depth"]) == (2, 1, 3)


def test_untied_variant_counts_lm_head(untied_checkpoint):
    result = analyze_checkpoint(untied_checkpoint)
    assert result["tie_word_embeddings"] is False
    text = dict(result, num_hidden_layers=result["num_layers"])
    assert result["params_text"] == expected_text_params(text)
    assert result["params_text"] == expected_text_params(dict(text, tie_word_embeddings=True)) + (
        result["vocab_size"] * result["hidden_size"]
    )


def test_cli_json_and_table(source_checkpoint, capsys):
    assert main(["analyze", "--input-model", str(source_checkpoint), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["vocab_size"] >= 151643
    assert main(["analyze", "-i", str(source_checkpoint)]) == 0
    table = capsys.readouterr().out
    assert "parameters (total)" in table and f"{data['params_total']:,}" in table


def test_cli_bad_path_is_one_line(tmp_path, capsys):
    assert main(["analyze", "-i", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]
