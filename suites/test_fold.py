"""Fold: W' = R.T @ W, b' = b @ R in float64, and the folded plain model computes the SO8T model.

The model-level checks compare the SO8T model (explicit gates, float32) with transformers' plain Qwen2-VL
built from ``iter_folded_tensors`` (float32): max |diff| <= 1e-4 x max |logit| (float32 accumulates a few
ulps per matmul over a handful of layers; 1e-4 leaves two orders of magnitude of headroom, while a wrong
fold moves logits by O(1) of their scale). Wrong-side folds must break that bound: the test can fail.
"""

from __future__ import annotations

import pytest
import torch

from so8t import group
from so8t.adapters import qwen2vl
from so8t.checkpoint.so8t_dir import SO8TCheckpoint
from so8t.fold import fold_linear, fold_linear_blocks, iter_folded_tensors
from so8t.model import SO8TModel, forward_qwen2vl, load_plain_qwen2vl

LOGIT_RTOL = 1e-4
F64_TOL = 64 * torch.finfo(torch.float64).eps  # a few ulps of O(1) float64 products over 32-term sums


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def test_fold_linear_equals_gate_after_linear():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 24, generator=gen, dtype=torch.float64)
    b = torch.randn(16, generator=gen, dtype=torch.float64)
    x = torch.randn(5, 24, generator=gen, dtype=torch.float64)
    r = group.block_diag(group.haar(2, seed=1))
    w2, b2 = fold_linear(w, b, r)
    assert w2.dtype == torch.float64 and b2.dtype == torch.float64
    torch.testing.assert_close(x @ w2.T + b2, (x @ w.T + b) @ r, rtol=0, atol=F64_TOL)
    # the wrong side (upstream SO8T's W @ R on a square weight) is not the same map
    w_sq = torch.randn(16, 16, generator=gen, dtype=torch.float64)
    assert not torch.allclose(x[:, :16] @ (w_sq @ r).T, (x[:, :16] @ w_sq.T) @ r, atol=1e-3)


def test_fold_linear_blocks_equals_dense_fold():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(24, 40, generator=gen).to(torch.bfloat16)
    b = torch.randn(24, generator=gen)
    blocks = group.haar(3, seed=2)
    dense_w, dense_b = fold_linear(w, b, group.block_diag(blocks))
    block_w, block_b = fold_linear_blocks(w, b, blocks)
    torch.testing.assert_close(block_w, dense_w, rtol=0, atol=F64_TOL)
    torch.testing.assert_close(block_b, dense_b, rtol=0, atol=F64_TOL)


def test_identity_gates_fold_to_the_source_weights(so8t_identity_dir):
    source = SO8TCheckpoint(so8t_identity_dir).reader
    for name, tensor in iter_folded_tensors(so8t_identity_dir, "text"):
        if qwen2vl.fold_site(name) is not None:
            # R = expm(0) = I exactly, so R.T @ W reproduces W exactly (then widened to float64)
            assert tensor.dtype == torch.float64
            assert torch.equal(tensor, source.get(name).to(torch.float64)), name


def test_iter_folded_tensors_parts_and_dtypes(so8t_random_dir):
    checkpoint = SO8TCheckpoint(so8t_random_dir)
    names = checkpoint.reader.names()
    text = [n for n, _ in iter_folded_tensors(checkpoint, "text")]
    vision = dict(iter_folded_tensors(checkpoint, "vision"))
    assert text and vision and sorted(text + list(vision)) == sorted(names)
    assert all(n.startswith("visual.") for n in vision)
    for name, tensor in vision.items():  # nothing in the vision tower is a gate site: unchanged
        source = checkpoint.reader.get(name)
        assert tensor.dtype == source.dtype and torch.equal(tensor, source), name
    sites = 0
    for name, tensor in iter_folded_tensors(checkpoint, "text"):
        if qwen2vl.fold_site(name) is None:
            assert tensor.dtype == checkpoint.reader.dtype
        else:
            sites += 1
            assert tensor.dtype == torch.float64
            assert not torch.equal(tensor, checkpoint.reader.get(name).to(torch.float64)), name
    assert sites == len(qwen2vl.FOLD_SITES) * checkpoint.num_layers
    with pytest.raises(ValueError):
        next(iter_folded_tensors(checkpoint, "audio"))


INPUTS = ("text_inputs", "vision_inputs")


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        if isinstance(model, SO8TModel):
            return model(**inputs).logits
        return forward_qwen2vl(model, **inputs).logits


@pytest.fixture(scope="module")
def so8t_logits(so8t_random_dir, request) -> dict[str, torch.Tensor]:
    """Logits of the SO8T model (explicit gates) per input set; the model is freed afterwards so a
    full-size ``--so8t-model`` run holds one model at a time."""
    model = SO8TModel.from_dir(so8t_random_dir)
    return {name: _logits(model, request.getfixturevalue(name)) for name in INPUTS}


def _plain_logits(tensors, so8t_dir, request, inputs=INPUTS) -> dict[str, torch.Tensor]:
    model = load_plain_qwen2vl(tensors, config=SO8TCheckpoint(so8t_dir).reader.config)
    return {name: _logits(model, request.getfixturevalue(name)) for name in inputs}


def _wrong_tensors(so8t_dir, wrong_fold):
    """The source tensors with ``wrong_fold(W, R_blocks)`` at every gate site (for the can-fail checks)."""
    checkpoint = SO8TCheckpoint(so8t_dir)
    for name in checkpoint.reader.names():
        tensor = checkpoint.reader.get(name)
        site = qwen2vl.fold_site(name)
        if site is not None:
            tensor = wrong_fold(tensor.to(torch.float64), checkpoint.site_rotation(site[1], site[0]))
        yield name, tensor


@pytest.mark.whole_model(copies=2, dtype="float32")
def test_folded_plain_model_matches_so8t_model(so8t_random_dir, so8t_logits, request):
    folded = _plain_logits(iter_folded_tensors(so8t_random_dir), so8t_random_dir, request)
    for name in INPUTS:
        assert folded[name].shape == so8t_logits[name].shape
        assert relative_error(folded[name], so8t_logits[name]) <= LOGIT_RTOL, name


@pytest.mark.whole_model(copies=2, dtype="float32")
def test_random_gates_change_the_model(so8t_random_dir, so8t_logits, request):
    """Guard against a vacuous pass: random gates must move logits far beyond the fold bound."""
    source = load_plain_qwen2vl(so8t_random_dir)  # the source weights, gates ignored
    plain = _logits(source, request.getfixturevalue("text_inputs"))
    assert relative_error(plain, so8t_logits["text_inputs"]) > 100 * LOGIT_RTOL


def _w_at_r(w, r):
    """Upstream SO8T's fold ``W @ R`` (block-diagonal R), defined only for square weights such as o_proj;
    down_proj keeps W, which is wrong too."""
    return group.apply_blocks(w, r) if w.shape[1] == w.shape[0] else w


def _r_at_w(w, r):
    """``R @ W``: the right side but R not transposed."""
    return group.apply_blocks(w.T, group.inverse(r)).T


@pytest.mark.whole_model(copies=2, dtype="float32")
@pytest.mark.parametrize("wrong_fold", [_w_at_r, _r_at_w], ids=["W@R", "R@W (missing transpose)"])
def test_wrong_side_fold_fails_the_comparison(so8t_random_dir, so8t_logits, request, wrong_fold):
    wrong = _plain_logits(
        _wrong_tensors(so8t_random_dir, wrong_fold), so8t_random_dir, request, ("text_inputs",)
    )
    assert relative_error(wrong["text_inputs"], so8t_logits["text_inputs"]) > LOGIT_RTOL


def test_wrong_folds_are_what_they_claim():
    """The helpers above really compute W @ R and R @ W (dense check on a small square case)."""
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(16, 16, generator=gen, dtype=torch.float64)
    blocks = group.haar(2, seed=5)
    r = group.block_diag(blocks)
    torch.testing.assert_close(_w_at_r(w, blocks), w @ r, rtol=0, atol=F64_TOL)
    torch.testing.assert_close(_r_at_w(w, blocks), r @ w, rtol=0, atol=F64_TOL)
