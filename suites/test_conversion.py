"""Qwen2-VL -> SO8T conversion: exact identity, files carried verbatim, variants of the source layout.

Identity check: the SO8T model with identity gates against transformers' own ``from_pretrained`` of the
source (an oracle independent of our loader), float32, max |diff| <= 1e-6 (expm(0) = I exactly, so the
gates multiply by exact ones and zeros; 1e-6 only allows for a different kernel order).
Random-gate checks compare with the folded plain model at 1e-4 x logit scale (see test_fold.py).
"""

from __future__ import annotations

import json

import blake3
import pytest
import torch
from safetensors.torch import load_file

from so8t import group
from so8t.adapters import qwen2vl
from so8t.checkpoint.so8t_dir import GATES_FILE, SO8TCheckpoint
from so8t.fold import iter_folded_tensors
from so8t.io import sha256_file
from so8t.model import SO8TModel, forward_qwen2vl, load_plain_qwen2vl
from suites.fixtures.conversions import convert, make_text_inputs, model_config

IDENTITY_ATOL = 1e-6
LOGIT_RTOL = 1e-4


def reference_model(checkpoint):
    from transformers import Qwen2VLForConditionalGeneration

    return Qwen2VLForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()


INPUTS = ("text_inputs", "vision_inputs")


@pytest.mark.whole_model(copies=2, dtype="float32")
def test_identity_conversion_computes_the_source_model(source_checkpoint, so8t_identity_dir, request):
    inputs = {name: request.getfixturevalue(name) for name in INPUTS}
    with torch.no_grad():  # one model in memory at a time (a full-size --so8t-model run)
        reference = reference_model(source_checkpoint)
        expected = {name: forward_qwen2vl(reference, **x).logits for name, x in inputs.items()}
        del reference
        model = SO8TModel.from_dir(so8t_identity_dir)
        actual = {name: model(**x).logits for name, x in inputs.items()}
    for name in INPUTS:
        assert actual[name].shape == expected[name].shape
        assert (actual[name] - expected[name]).abs().max().item() <= IDENTITY_ATOL, name


def test_weights_and_aux_files_are_carried_verbatim(source_checkpoint, so8t_identity_dir):
    from so8t.checkpoint import CheckpointReader

    converted = SO8TCheckpoint(so8t_identity_dir)
    original = CheckpointReader(source_checkpoint)
    for path in list(original.shard_files) + [p for p in original.aux_files if p.name != "config.json"]:
        rel = path.relative_to(original.path)
        assert sha256_file(so8t_identity_dir / rel) == sha256_file(path), rel
    assert converted.reader.names() == original.names()


def test_vision_tower_and_embeddings_unchanged(source_checkpoint, so8t_random_dir):
    from so8t.checkpoint import CheckpointReader

    original = CheckpointReader(source_checkpoint)
    converted = SO8TCheckpoint(so8t_random_dir)
    unchanged = [n for n in original.names() if n.startswith("visual.") or n == "model.embed_tokens.weight"]
    assert any(n.startswith("visual.") for n in unchanged) and "model.embed_tokens.weight" in unchanged
    folded = dict(iter_folded_tensors(converted, "vision"))
    for name in unchanged:
        assert torch.equal(converted.reader.get(name), original.get(name)), name
        if name in folded:
            assert torch.equal(folded[name], original.get(name)), name


def test_config_records_the_conversion(source_checkpoint, so8t_random_dir):
    from so8t.checkpoint import CheckpointReader

    original = CheckpointReader(source_checkpoint)
    config = json.loads((so8t_random_dir / "config.json").read_text())
    section = config.pop("so8t")
    assert config == original.config
    assert section["version"] == 1 and section["rotation_dim"] == 8 and section["group"] == "SO(8)"
    assert section["gate_sites"] == {
        "attention_output": ["attn_rot", "attn_safe", "attn_cmd"],
        "mlp_output": ["mlp_rot"],
    }
    assert section["map"] == "exp" and section["rotation_init"] == "random"
    assert section["safety_head"] is True and section["safety_classes"] == ["ALLOW", "ESCALATE", "REFUSE"]
    assert section["source"]["name"] == original.path.resolve().name  # a name, not a path of this machine
    assert "path" not in section["source"]
    files = section["source"]["files"]
    assert files and sorted(files) == sorted(
        p.relative_to(original.path).as_posix() for p in original.shard_files
    )
    assert section["source"]["hash"] == "blake3" == SO8TCheckpoint(so8t_random_dir).source_file_hash
    for name, digest in files.items():  # the reference library itself, single-threaded, over the source
        assert digest == blake3.blake3((original.path / name).read_bytes()).hexdigest(), name


def test_gates_file_contents(so8t_identity_dir, so8t_random_dir):
    checkpoint = SO8TCheckpoint(so8t_identity_dir)
    shape = (checkpoint.hidden_size // 8, 28)
    identity = load_file(str(so8t_identity_dir / GATES_FILE))
    assert len(identity) == checkpoint.num_layers * len(qwen2vl.GATE_NAMES)
    assert all(t.dtype == torch.float32 and tuple(t.shape) == shape for t in identity.values())
    assert all(torch.count_nonzero(t) == 0 for t in identity.values())  # identity init = zero generators
    random = load_file(str(so8t_random_dir / GATES_FILE))
    assert len(random) == len(identity) + 4  # + safety head (2 Linears x weight, bias)
    gates = [random[k] for k in identity]
    assert all(torch.count_nonzero(t) == t.numel() for t in gates)
    assert len({tuple(t.flatten()[:4].tolist()) for t in gates}) == len(gates)  # every gate its own draw
    for layer in range(checkpoint.num_layers):
        assert group.in_so8(SO8TCheckpoint(so8t_random_dir).rotation(layer, "attn_rot"))


def test_random_conversion_is_deterministic(checkpoint_variant, tmp_path):
    source = checkpoint_variant(vocab_size=1024)
    first = convert(source, tmp_path / "first", rotation_init="random", seed=9, safety_features=True)
    again = convert(source, tmp_path / "again", rotation_init="random", seed=9, safety_features=True)
    assert sha256_file(again / GATES_FILE) == sha256_file(first / GATES_FILE)
    other = convert(source, tmp_path / "other", rotation_init="random", seed=10)
    assert not torch.equal(
        load_file(str(other / GATES_FILE))["layers.0.attn_rot.generators"],
        load_file(str(again / GATES_FILE))["layers.0.attn_rot.generators"],
    )


def test_linked_weights_record_what_copied_weights_record(checkpoint_variant, tmp_path):
    """``--link-weights``: the output's weight files are the source's (hard links), everything else and every
    recorded digest is what the default copy writes; the default copy shares no file with the source."""
    import os

    from so8t.checkpoint import CheckpointReader
    from so8t.cli import main

    source = checkpoint_variant(vocab_size=1024, shards=2)
    copied = convert(source, tmp_path / "copied", rotation_init="random", seed=9)
    linked = tmp_path / "linked"
    argv = ["convert", "--input-model", str(source), "--output-model", str(linked), "--rotation-init",
            "random", "--seed", "9", "--link-weights", "--no-progress"]
    assert main(argv) == 0
    shards = SO8TCheckpoint(linked).reader.shard_files
    assert len(shards) == len(CheckpointReader(source).shard_files) > 1
    for shard in shards:
        rel = shard.relative_to(linked)
        assert os.path.samefile(shard, source / rel), rel
        assert not os.path.samefile(copied / rel, source / rel), rel
    for rel in ("config.json", GATES_FILE):
        assert (linked / rel).read_bytes() == (copied / rel).read_bytes(), rel
    tokenizer = next(p.name for p in source.iterdir() if p.name.startswith("tokenizer"))
    assert not os.path.samefile(linked / tokenizer, source / tokenizer)  # only the weights are linked


VARIANTS = {
    "transformers5-layout": {"layout": "transformers5"},
    "single-file": {"shards": 1},
    "three-shards": {"shards": 3},
    "untied": {"tied": False},
    "float16": {"dtype": "float16"},
    "float32": {"dtype": "float32", "shards": 1},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_source_variants_convert_and_fold(variant, tmp_path):
    """Each on-disk variant: identity == source (transformers oracle), random gates == folded model."""
    from so8t.testing import TinySpec, build_checkpoint

    spec = TinySpec(vocab_size=1024, **VARIANTS[variant])  # small vocab: the variants only test layouts
    source = build_checkpoint(tmp_path / "source", spec)
    inputs = make_text_inputs(model_config(source))
    identity = convert(source, tmp_path / "identity")
    random = convert(source, tmp_path / "random", rotation_init="random", seed=5)
    with torch.no_grad():
        expected = forward_qwen2vl(reference_model(source), **inputs).logits
        assert (SO8TModel.from_dir(identity)(**inputs).logits - expected).abs().max().item() <= IDENTITY_ATOL
        gated = SO8TModel.from_dir(random)(**inputs).logits
        config = SO8TCheckpoint(random).reader.config
        folded = forward_qwen2vl(
            load_plain_qwen2vl(iter_folded_tensors(random), config=config), **inputs
        ).logits
    assert ((folded - gated).abs().max() / gated.abs().max()).item() <= LOGIT_RTOL
    assert ((expected - gated).abs().max() / gated.abs().max()).item() > 100 * LOGIT_RTOL  # gates did act
    names = SO8TCheckpoint(random).reader.names()
    assert ("lm_head.weight" in names) == (not spec.tied)


def test_cayley_map_conversion(tmp_path):
    from so8t.testing import TinySpec, build_checkpoint

    source = build_checkpoint(tmp_path / "source", TinySpec(vocab_size=1024, shards=1))
    out = convert(source, tmp_path / "cayley", rotation_init="random", seed=3, map="cayley")
    checkpoint = SO8TCheckpoint(out)
    assert checkpoint.rotation_map is group.RotationMap.CAYLEY
    g = checkpoint.gate_generators(0, "mlp_rot").to(torch.float64)
    a = group.skew(g)
    eye = torch.eye(8, dtype=torch.float64)
    by_hand = torch.linalg.inv(eye - a / 2) @ (eye + a / 2)  # Cayley, written out
    torch.testing.assert_close(checkpoint.rotation(0, "mlp_rot"), by_hand, rtol=0, atol=1e-12)
    model = SO8TModel.from_dir(out)
    assert model.gates[0].mlp_rot.map is group.RotationMap.CAYLEY
    inputs = make_text_inputs(model_config(source))
    with torch.no_grad():
        gated = model(**inputs).logits
        folded = forward_qwen2vl(
            load_plain_qwen2vl(iter_folded_tensors(out), config=checkpoint.reader.config), **inputs
        ).logits
    assert ((folded - gated).abs().max() / gated.abs().max()).item() <= LOGIT_RTOL
