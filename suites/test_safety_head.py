"""Safety head: class names, shapes, the last non-pad token, and its place in the SO8T model."""

from __future__ import annotations

import pytest
import torch

from so8t.safety import SAFETY_CLASSES, SafetyHead, last_token_index
from suites.float_bounds import f32_chain_bound


def test_class_names_in_logit_order():
    assert SAFETY_CLASSES == ("ALLOW", "ESCALATE", "REFUSE")
    assert SafetyHead(16).classes == SAFETY_CLASSES


def test_architecture_and_shapes():
    head = SafetyHead(16, seed=0)
    assert isinstance(head[0], torch.nn.Linear) and tuple(head[0].weight.shape) == (16, 16)
    assert isinstance(head[1], torch.nn.GELU)
    assert isinstance(head[2], torch.nn.Linear) and tuple(head[2].weight.shape) == (3, 16)
    logits = head.classify(torch.randn(4, 5, 16))
    assert logits.shape == (4, 3)


def test_last_non_pad_token_for_right_and_left_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]])
    assert last_token_index(mask, 4, 5).tolist() == [2, 4, 4, 1]
    assert last_token_index(None, 2, 5).tolist() == [4, 4]


def test_classify_reads_the_last_non_pad_token():
    head = SafetyHead(8, seed=3)
    hidden = torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    logits = head.classify(hidden, mask)
    # by hand: row 0 uses position 1, row 1 position 3, through Linear -> GELU -> Linear
    w0, b0, w2, b2 = head[0].weight, head[0].bias, head[2].weight, head[2].bias
    for row, pos in ((0, 1), (1, 3)):
        x = hidden[row, pos]
        expected = torch.nn.functional.gelu(x @ w0.T + b0) @ w2.T + b2
        torch.testing.assert_close(logits[row], expected)  # float32 default tolerances


def test_seeded_init_is_deterministic_and_file_state_round_trips():
    a, b, c = SafetyHead(8, seed=1), SafetyHead(8, seed=1), SafetyHead(8, seed=2)
    assert torch.equal(a[0].weight, b[0].weight)
    assert not torch.equal(a[0].weight, c[0].weight)
    state = a.file_state()
    assert sorted(state) == [
        "safety_head.0.bias",
        "safety_head.0.weight",
        "safety_head.2.bias",
        "safety_head.2.weight",
    ]
    restored = SafetyHead.from_file_state(state)
    x = torch.randn(3, 2, 8)
    assert torch.equal(restored.classify(x), a.classify(x))


@pytest.mark.whole_model(copies=1, dtype="float32")
def test_so8t_model_returns_safety_logits(so8t_random_dir, text_inputs):
    from so8t.model import SO8TModel

    model = SO8TModel.from_dir(so8t_random_dir)
    with torch.no_grad():
        out = model(**text_inputs)
        batch = text_inputs["input_ids"].shape[0]
        assert out.safety_logits.shape == (batch, len(SAFETY_CLASSES))
        # the padded row's verdict equals running that row alone without its pads
        mask = text_inputs["attention_mask"][1]
        alone = model(text_inputs["input_ids"][1:, : int(mask.sum())])
    # padding changes only how float32 sums: the chain bound of the parity suites, (4 L + 2) sqrt(K_max)
    # 2^-24 max|logit| (4 products per layer, 2 in the head; K_max the longest dot product)
    cfg = model.qwen.config.text_config if hasattr(model.qwen.config, "text_config") else model.qwen.config
    bound = f32_chain_bound(cfg, extra_products=2)
    scale = float(alone.safety_logits.abs().max())
    assert float((out.safety_logits[1] - alone.safety_logits[0]).abs().max()) <= bound * scale


@pytest.mark.whole_model(copies=1, dtype="float32")
def test_so8t_model_without_head_has_no_safety_logits(so8t_identity_dir, text_inputs):
    from so8t.model import SO8TModel

    model = SO8TModel.from_dir(so8t_identity_dir)
    assert model.safety_head is None
    with torch.no_grad():
        assert model(**text_inputs).safety_logits is None
