"""The streamed float64 reference (``so8t.reference``) computes what ``SO8TModel`` computes.

Oracle: ``SO8TModel`` / ``load_plain_qwen2vl`` of the same directory in float64, with transformers'
``Qwen2VLRMSNorm`` patched to normalise in the input dtype (it casts to float32, a downcast in a float64
model: Note [RMSNorm dtype] of so8t/reference.py) and the gates cast to float64. Both sides are then
float64 throughout, so they agree to a few hundred float64 roundings: 1e-10 relative to the largest
logit is five orders of magnitude above that and eight below the float32 errors the validator judges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from so8t.reference import StreamedReference, Variant
from suites.fixtures.gguf_files import per_type

RTOL = 1e-10


@pytest.fixture(scope="module")
def sequences(parity_ids) -> list[list[int]]:
    return [list(parity_ids), list(parity_ids[3:17]), [151644, 872, 198]]


def _close(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def _so8t_logits(so8t_dir: Path, seq: list[int], eps: float | None):
    from so8t.model import SO8TModel

    model = SO8TModel.from_dir(so8t_dir, dtype=torch.float64, rms_norm_eps=eps).double()
    with torch.no_grad():
        out = model(torch.tensor([seq]))
    return out.logits[0].numpy(), out.hidden_states[0].numpy()


# eps 0 is what every parity check uses (docs/reference.md section 5); the config's eps (the canary's) takes
# the same code path with another number and repeats the whole float64 model: heavy on a user's checkpoint
@pytest.mark.whole_model(copies=1, dtype="float64")
@pytest.mark.parametrize("eps", per_type([0.0, None], light=(0.0,)))
def test_gated_reference_matches_so8t_model(float64_norms, so8t_random_dir, sequences, eps):
    out = StreamedReference(so8t_random_dir).run(sequences, [Variant(eps=eps)])[Variant(eps=eps)]
    for i, seq in enumerate(sequences):
        rows = slice(out.offsets[i], out.offsets[i + 1])
        logits, hidden = _so8t_logits(so8t_random_dir, seq, eps)
        assert _close(out.logits[rows], logits) <= RTOL
        assert _close(out.hidden[rows], hidden) <= RTOL


@pytest.mark.whole_model(copies=1, dtype="float64")
def test_plain_variant_is_the_source_model(float64_norms, so8t_random_dir, source_checkpoint, sequences):
    from so8t.model import forward_qwen2vl, load_plain_qwen2vl

    ref = StreamedReference(so8t_random_dir)
    assert not ref.identity_gates
    out = ref.run(sequences[:1], [Variant(gates=False, eps=0.0)])[Variant(gates=False, eps=0.0)]
    plain = load_plain_qwen2vl(source_checkpoint, dtype=torch.float64, rms_norm_eps=0.0)
    with torch.no_grad():
        want = forward_qwen2vl(plain, torch.tensor([sequences[0]])).logits[0].numpy()
    assert _close(out.logits, want) <= RTOL
    gated = ref.run(sequences[:1], [Variant(eps=0.0)])[Variant(eps=0.0)]
    assert _close(gated.logits, want) > 1e-3  # random gates change the function


def test_variants_share_a_pass_and_vocab_chunks_do_not_matter(so8t_random_dir, sequences):
    """Batching two variants and chunking the vocabulary change only which BLAS kernels sum the float64
    products: relative logit differences within ``C * sqrt(K_max) * 2^-53`` (C = 4 layers + 1 products in
    the chain, K_max the longest dot product; the float64 form of so8t.gguf.parity.float_bound)."""
    from so8t.checkpoint import CheckpointReader

    cfg = CheckpointReader(so8t_random_dir).text_config
    chain = 4 * int(cfg.num_hidden_layers) + 1
    bound = chain * np.sqrt(max(int(cfg.hidden_size), int(cfg.intermediate_size))) * 2.0**-53
    both = StreamedReference(so8t_random_dir, vocab_chunk=1000).run(sequences, [Variant(eps=0.0), Variant()])
    alone = StreamedReference(so8t_random_dir).run(sequences, [Variant()])[Variant()]
    assert _close(both[Variant()].logits, alone.logits) <= bound
    assert not np.array_equal(both[Variant()].logits, both[Variant(eps=0.0)].logits)


def test_identity_gates_are_the_plain_model_and_results_are_cached(so8t_identity_dir, sequences):
    ref = StreamedReference(so8t_identity_dir)
    assert ref.identity_gates
    outs = ref.run(sequences, [Variant(eps=0.0), Variant(gates=False, eps=0.0)])
    assert outs[Variant(eps=0.0)] is outs[Variant(gates=False, eps=0.0)]
    assert ref.run(sequences, [Variant(eps=0.0)])[Variant(eps=0.0)] is outs[Variant(eps=0.0)]


def test_untied_checkpoint_projects_with_lm_head(float64_norms, untied_checkpoint, tmp_path, sequences):
    from so8t.conversion import Qwen2VLToSO8TConverter

    so8t_dir = Qwen2VLToSO8TConverter(untied_checkpoint, rotation_init="random", seed=5, progress=False).convert(
        tmp_path / "untied")
    out = StreamedReference(so8t_dir).run(sequences[:1], [Variant()])[Variant()]
    assert _close(out.logits, _so8t_logits(so8t_dir, sequences[0], None)[0]) <= RTOL
