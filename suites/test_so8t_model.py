"""The SO8T model: gates sit after o_proj / down_proj in the right order, are trainable, and load safely."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from so8t import group
from so8t.adapters import qwen2vl
from so8t.checkpoint.so8t_dir import GATES_FILE, SO8TCheckpoint
from so8t.errors import CheckpointError, ConfigError
from so8t.model import SO8TModel, load_plain_qwen2vl

#: float32 comparisons use torch.testing's float32 defaults (rtol 1.3e-6, atol 1e-5); "clearly different"
#: means beyond 100 x that atol.
F32_ATOL = 1e-5


@pytest.fixture(scope="module")
def model(so8t_random_dir):
    return SO8TModel.from_dir(so8t_random_dir)


@pytest.mark.whole_model(copies=1, dtype="float32")
def test_gates_are_trainable_parameters(model):
    checkpoint_layers = len(model.gates)
    generator_params = [n for n, p in model.named_parameters() if n.endswith("generators")]
    assert len(generator_params) == checkpoint_layers * len(qwen2vl.GATE_NAMES)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.endswith("generators"))


@pytest.mark.whole_model(copies=1, dtype="float32")
def test_gates_match_the_checkpoint(model, so8t_random_dir):
    checkpoint = SO8TCheckpoint(so8t_random_dir)
    for layer, gates in enumerate(model.gates):
        for name in qwen2vl.GATE_NAMES:
            assert torch.equal(gates.gate(name).generators.detach(), checkpoint.gate_generators(layer, name))
    assert model.gates[0].attn_rot.map == checkpoint.rotation_map


def _capture(model, linear, inputs) -> dict:
    """Run ``model`` once and return the input ``x`` and hooked (gated) output ``y`` of ``linear``."""
    seen = {}
    handle = linear.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    return seen


@pytest.mark.whole_model(copies=1, dtype="float32")
def test_attention_output_is_rotated_in_order_rot_safe_cmd(model, text_inputs):
    """o_proj's hooked output is o @ R_rot @ R_safe @ R_cmd, and not the order with safe/cmd swapped."""
    layer = 0
    linear = qwen2vl.site_module(model.qwen, layer, qwen2vl.FOLD_SITES[0])
    seen = _capture(model, linear, text_inputs)
    gates = model.gates[layer]
    dense = {name: gates.gate(name).dense().detach() for name in qwen2vl.GATE_NAMES}
    raw = seen["x"] @ linear.weight.T
    expected = raw @ dense["attn_rot"] @ dense["attn_safe"] @ dense["attn_cmd"]
    swapped = raw @ dense["attn_rot"] @ dense["attn_cmd"] @ dense["attn_safe"]
    torch.testing.assert_close(seen["y"], expected)
    assert (seen["y"] - swapped).abs().max() > 100 * F32_ATOL  # SO(8) does not commute


@pytest.mark.whole_model(copies=1, dtype="float32")
def test_mlp_output_is_rotated(model, text_inputs):
    layer = len(model.gates) - 1
    linear = qwen2vl.site_module(model.qwen, layer, qwen2vl.FOLD_SITES[1])
    seen = _capture(model, linear, text_inputs)
    expected = (seen["x"] @ linear.weight.T) @ model.gates[layer].mlp_rot.dense().detach()
    torch.testing.assert_close(seen["y"], expected)


@pytest.mark.whole_model(copies=1, dtype="float32")
def test_outputs_and_final_norm_hidden_states(model, text_inputs):
    with torch.no_grad():
        out = model(**text_inputs)
    batch, seq = text_inputs["input_ids"].shape
    config = model.qwen.config.text_config
    assert out.logits.shape == (batch, seq, config.vocab_size)
    assert out.hidden_states.shape == (batch, seq, config.hidden_size)
    assert out.logits.dtype == torch.float32
    torch.testing.assert_close(out.logits, model.qwen.lm_head(out.hidden_states), rtol=0, atol=0)


@pytest.mark.whole_model(copies=2, dtype="float32")
def test_training_step_moves_gates_and_keeps_them_in_so8(so8t_random_dir, text_inputs):
    model = SO8TModel.from_dir(so8t_random_dir)
    model.train()
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith("generators"))
    before = model.gates[0].gate("attn_safe").generators.detach().clone()
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        out = model(**text_inputs)
        loss = torch.nn.functional.cross_entropy(
            out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), text_inputs["input_ids"][:, 1:].reshape(-1)
        )
        optim.zero_grad()
        loss.backward()
        optim.step()
    after = model.gates[0].gate("attn_safe").generators.detach()
    assert not torch.equal(before, after)
    for gates in model.gates:
        for name in qwen2vl.GATE_NAMES:
            assert group.in_so8(gates.gate(name).rotations().detach())


@pytest.mark.whole_model(copies=1, dtype="float32")
def test_rms_norm_eps_override(so8t_identity_dir):
    model = SO8TModel.from_dir(so8t_identity_dir, rms_norm_eps=0.0)
    assert model.qwen.config.text_config.rms_norm_eps == 0.0
    norms = [m for n, m in model.qwen.named_modules() if n.endswith(("layernorm", "language_model.norm"))]
    assert norms and all(m.variance_epsilon == 0.0 for m in norms)


@pytest.mark.whole_model(copies=1, dtype="float32")
def test_gates_file_state_round_trips(model, so8t_random_dir):
    from safetensors.torch import load_file

    saved = load_file(str(so8t_random_dir / GATES_FILE))
    state = model.gates_file_state()
    assert sorted(state) == sorted(saved)
    assert all(torch.equal(state[k], saved[k]) for k in saved)


def test_plain_directory_is_not_an_so8t_checkpoint(source_checkpoint):
    with pytest.raises(ConfigError, match="no 'so8t' section"):
        SO8TModel.from_dir(source_checkpoint)


def _linked_copy(so8t_dir: Path, out: Path) -> Path:
    """A copy of an SO8T directory whose files are hard links (the weights are GBs at a real size): a test
    that changes a file unlinks it first and writes a new one."""
    return Path(shutil.copytree(so8t_dir, out, copy_function=os.link))


def test_missing_or_incomplete_gates_file(so8t_identity_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = _linked_copy(so8t_identity_dir, tmp_path / "broken")
    tensors = load_file(str(broken / GATES_FILE))
    tensors.pop("layers.0.attn_cmd.generators")
    (broken / GATES_FILE).unlink()  # a hard link: write a new file, never through the link
    save_file(tensors, str(broken / GATES_FILE))
    with pytest.raises(CheckpointError, match="layers.0.attn_cmd.generators"):
        SO8TCheckpoint(broken)
    (broken / GATES_FILE).unlink()
    with pytest.raises(CheckpointError, match=GATES_FILE):
        SO8TCheckpoint(broken)


def test_unknown_so8t_version_is_rejected(so8t_identity_dir, tmp_path):
    broken = _linked_copy(so8t_identity_dir, tmp_path / "v99")
    config = json.loads((broken / "config.json").read_text())
    config["so8t"]["version"] = 99
    (broken / "config.json").unlink()  # a hard link: write a new file, never through the link
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="version"):
        SO8TCheckpoint(broken)


@pytest.mark.whole_model(copies=1, dtype="float32")
def test_plain_loader_rejects_missing_and_misshapen_tensors(so8t_identity_dir):
    reader = SO8TCheckpoint(so8t_identity_dir).reader
    names = [n for n in reader.names() if n != "model.norm.weight"]
    with pytest.raises(CheckpointError, match="missing"):
        load_plain_qwen2vl(((n, reader.get(n)) for n in names), config=reader.config)

    def bad():
        for n in reader.names():
            t = reader.get(n)
            yield n, (t[:-8] if n == "model.norm.weight" else t)

    with pytest.raises(CheckpointError, match="model.norm.weight"):
        load_plain_qwen2vl(bad(), config=reader.config)
