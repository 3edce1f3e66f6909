"""The embedded default checkpoint: deterministic, hub layout, real Qwen2 tokenizer, loadable by transformers.

Expected values come from outside the builder: the on-disk layout and ids of Qwen2-VL-2B-Instruct
(docs/reference.md section 2), llama.cpp's pre-tokenizer fingerprints, hand-counted tensor numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from so8t.errors import ConfigError, So8tError
from so8t.io import sha256_file
from so8t.testing import TinySpec, build_checkpoint, default_checkpoint
from so8t.testing import tokenizer as tok
from so8t.testing.spec import num_params

HUB_FILES = {
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "chat_template.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
}
SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
#: Hub tensor-name patterns of Qwen2-VL (docs/reference.md section 2).
HUB_NAME = re.compile(
    r"model\.embed_tokens\.weight|model\.norm\.weight|lm_head\.weight"
    r"|model\.layers\.\d+\.(input_layernorm|post_attention_layernorm)\.weight"
    r"|model\.layers\.\d+\.self_attn\.[qkv]_proj\.(weight|bias)|model\.layers\.\d+\.self_attn\.o_proj\.weight"
    r"|model\.layers\.\d+\.mlp\.(gate|up|down)_proj\.weight|visual\.patch_embed\.proj\.weight"
    r"|visual\.blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)"
    r"|visual\.merger\.(ln_q|mlp\.0|mlp\.2)\.(weight|bias)"
)
#: llama.cpp convert_hf_to_gguf.py get_vocab_base_pre(): text and the hashes that mean "qwen2".
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
QWEN2_CHKHSH = {
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c",
}


def file_hashes(directory: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(directory.iterdir())}


def load_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def default_dir() -> Path:
    return default_checkpoint("tied")


@pytest.fixture(scope="module")
def hf_tokenizer(default_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_dir)


def test_builds_are_byte_identical_across_processes_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SO8T_CACHE_DIR", str(tmp_path / "cache"))
    cached = default_checkpoint("tied")
    assert cached.parent == tmp_path / "cache"
    # A second build in a fresh interpreter with a different hash seed (dict/set order) must match.
    other = tmp_path / "other"
    code = f"from so8t.testing import build_checkpoint; build_checkpoint({str(other)!r})"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
    first = file_hashes(cached)
    assert set(first) == HUB_FILES
    assert file_hashes(other) == first
    # Cached: a second call returns the same directory without rebuilding it.
    stamp = (cached / "model-00001-of-00002.safetensors").stat().st_mtime_ns
    assert default_checkpoint("tied") == cached
    assert (cached / "model-00001-of-00002.safetensors").stat().st_mtime_ns == stamp


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    from so8t.testing import builder

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(builder, "write_weights", explode)
    with pytest.raises(KeyboardInterrupt):
        build_checkpoint(tmp_path / "ckpt", TinySpec(tokenizer=False))
    assert list(tmp_path.iterdir()) == []


def test_hub_layout_files_and_config(default_dir):
    assert {p.name for p in default_dir.iterdir()} == HUB_FILES
    config = load_json(default_dir / "config.json")
    assert config["architectures"] == ["Qwen2VLForConditionalGeneration"]
    assert config["model_type"] == "qwen2_vl"
    assert config["rope_scaling"] == {"type": "mrope", "mrope_section": [16, 24, 24]}
    assert config["tie_word_embeddings"] is True and "text_config" not in config
    assert (config["bos_token_id"], config["eos_token_id"]) == (151643, 151645)
    assert (config["image_token_id"], config["video_token_id"]) == (151655, 151656)
    assert (config["vision_start_token_id"], config["vision_end_token_id"]) == (151652, 151653)
    assert config["vocab_size"] == 151936
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert 2 * sum(config["rope_scaling"]["mrope_section"]) == head_dim
    assert config["num_key_value_heads"] < config["num_attention_heads"]  # GQA
    assert config["num_hidden_layers"] >= 2 and config["vision_config"]["depth"] >= 3
    assert config["vision_config"]["hidden_size"] == config["hidden_size"]  # merger output = text hidden
    pre = load_json(default_dir / "preprocessor_config.json")
    assert pre["image_mean"] == [0.48145466, 0.4578275, 0.40821073]
    assert pre["image_std"] == [0.26862954, 0.26130258, 0.27577711]
    assert (pre["patch_size"], pre["temporal_patch_size"], pre["merge_size"]) == (14, 2, 2)
    assert (pre["min_pixels"], pre["max_pixels"]) == (3136, 12845056)
    gen = load_json(default_dir / "generation_config.json")
    assert gen["eos_token_id"] == [151645, 151643] and gen["bos_token_id"] == 151643
    template = load_json(default_dir / "chat_template.json")["chat_template"]
    assert "<|vision_start|><|image_pad|><|vision_end|>" in template and "<|im_start|>assistant" in template


def test_shards_index_and_tensor_names(default_dir):
    index = load_json(default_dir / "model.safetensors.index.json")
    weight_map = index["weight_map"]
    assert list(weight_map) == sorted(weight_map)
    # 2 text globals + 12 per layer x 2 + 7 vision globals + 12 per block x 3 (tied: no lm_head.weight)
    assert len(weight_map) == 2 + 12 * 2 + 7 + 12 * 3
    assert all(HUB_NAME.fullmatch(name) for name in weight_map), [
        n for n in weight_map if not HUB_NAME.fullmatch(n)
    ]
    assert "lm_head.weight" not in weight_map
    total = 0
    for shard in sorted(set(weight_map.values())):
        with safe_open(default_dir / shard, framework="pt") as handle:
            assert {n for n, s in weight_map.items() if s == shard} == set(handle.keys())
            for name in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                tensor = handle.get_tensor(name)
                assert tensor.dtype == torch.bfloat16, name
                total += tensor.numel() * 2
    assert index["metadata"]["total_size"] == total


def test_widths_allow_k_quants(default_dir):
    index = load_json(default_dir / "model.safetensors.index.json")
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(default_dir / shard, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                shape = handle.get_slice(name).get_shape()
                if len(shape) == 2:  # every Linear / embedding row is a whole number of 256-blocks
                    assert shape[1] % 256 == 0, (name, shape)


def test_vocabulary_and_special_tokens(default_dir):
    data = load_json(default_dir / "tokenizer.json")
    assert len(data["model"]["vocab"]) == 151643
    assert len(data["model"]["merges"]) == 151387
    added = {t["id"]: t["content"] for t in data["added_tokens"]}
    assert added == {151643 + i: text for i, text in enumerate(SPECIAL)}
    assert all(t["special"] for t in data["added_tokens"])
    assert len(load_json(default_dir / "vocab.json")) == 151643
    merges = (default_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version") and len(merges) == 1 + 151387
    with safe_open(default_dir / "model-00001-of-00002.safetensors", framework="pt") as handle:
        assert handle.get_slice("model.embed_tokens.weight").get_shape()[0] == 151936


def test_hello_world_and_special_ids(hf_tokenizer):
    assert hf_tokenizer.encode("Hello world") == [9707, 1879]
    for i, text in enumerate(SPECIAL):
        assert hf_tokenizer.convert_tokens_to_ids(text) == 151643 + i
    assert hf_tokenizer.encode("<|im_start|>user\n") == [151644, 872, 198]


def test_llama_cpp_recognises_the_qwen2_pre_tokenizer(hf_tokenizer):
    chkhsh = hashlib.sha256(str(hf_tokenizer.encode(CHKTXT)).encode()).hexdigest()
    assert chkhsh in QWEN2_CHKHSH


def test_ranks_with_wrong_sha256_are_refused(tmp_path):
    bad = tmp_path / "qwen.tiktoken"
    data = bytearray(tok.tiktoken_resource().read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")
    bad.write_bytes(bytes(data))
    with pytest.raises(So8tError, match="sha256") as err:
        tok.write_tokenizer_files(tmp_path, ranks_path=bad)
    assert err.value.path == bad
    assert not (tmp_path / "tokenizer.json").exists()


def test_full_replica_spec_has_the_real_parameter_count():
    spec = TinySpec.qwen2vl_2b_instruct()
    assert num_params(spec) == 2_208_985_600  # Qwen2-VL-2B-Instruct
    assert num_params(spec) * 2 == 4_417_971_200  # its index total_size (bf16)


@pytest.mark.parametrize("variant", ["tied", "untied"])
def test_transformers_loads_and_runs(variant):
    from transformers import Qwen2VLForConditionalGeneration

    path = default_checkpoint(variant)
    model, info = Qwen2VLForConditionalGeneration.from_pretrained(
        path, dtype=torch.float32, output_loading_info=True
    )
    assert {k: v for k, v in info.items() if v} == {}
    model.eval()
    embed = model.get_input_embeddings().weight
    assert (model.lm_head.weight.data_ptr() == embed.data_ptr()) == (variant == "tied")
    grid = torch.tensor([[1, 4, 4]])  # 16 patches -> 4 merged image tokens
    ids = [151644, 872, 198, 151652] + [151655] * 4 + [151653, 9707, 1879, 151645]
    pixels = torch.randn(16, 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(0))
    kinds = torch.tensor([[int(i == 151655) for i in ids]])  # mm_token_type_ids: 1 marks image tokens
    with torch.no_grad():
        text = model(input_ids=torch.tensor([[9707, 1879, 11, 42]])).logits
        batch = {"input_ids": torch.tensor([ids]), "image_grid_thw": grid, "mm_token_type_ids": kinds}
        image = model(**batch, pixel_values=pixels).logits
        other = model(**batch, pixel_values=-pixels).logits
    assert text.shape == (1, 4, 151936) and image.shape == (1, len(ids), 151936)
    assert torch.isfinite(text).all() and torch.isfinite(image).all()
    eps = torch.finfo(torch.bfloat16).eps
    assert (text[0, 1:] - text[0, :-1]).abs().amax() > eps  # positions give different logits
    assert text[0, -1].std() > eps  # tokens within a position differ
    assert (image[0, -1] - other[0, -1]).abs().amax() > eps  # the image reaches the text


def test_transformers5_layout_loads_to_the_same_model(checkpoint_variant):
    from transformers import Qwen2VLForConditionalGeneration

    ids = torch.tensor([[9707, 1879, 11, 42]])
    logits = []
    for layout in ("hub", "transformers5"):
        path = checkpoint_variant(layout=layout, dtype="float32", shards=1, tokenizer=False)
        model, info = Qwen2VLForConditionalGeneration.from_pretrained(
            path, dtype=torch.float32, output_loading_info=True
        )
        assert {k: v for k, v in info.items() if v} == {}, layout
        with torch.no_grad():
            logits.append(model.eval()(input_ids=ids).logits)
    assert torch.equal(logits[0], logits[1])


def test_bad_variants_are_typed_errors():
    with pytest.raises(So8tError, match="unknown default checkpoint variant"):
        default_checkpoint("small")
    with pytest.raises(ConfigError, match="mrope_section"):
        TinySpec(mrope_section=(16, 16, 16))
    with pytest.raises(ConfigError, match="layout"):
        TinySpec(layout="gguf")


def test_cache_rebuilds_a_damaged_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("SO8T_CACHE_DIR", str(tmp_path))
    path = default_checkpoint("tied")
    (path / "model-00002-of-00002.safetensors").unlink()
    assert default_checkpoint("tied") == path
    assert {p.name for p in path.iterdir()} == HUB_FILES
