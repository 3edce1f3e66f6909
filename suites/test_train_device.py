"""Training on any device: the loss code makes every tensor where the batch is, and ``--device`` resolves.

CI has no GPU. The CPU-side guard is the ``meta`` device: a tensor on it has a shape and no data, so the
loss code run on a meta batch fails on anything a CUDA run would trip over (an index tensor left on the
CPU, a device-to-host read such as ``float()``/``bool()`` of a device value, a data-dependent shape). The
``cuda`` tests run the real thing where torch sees a GPU and say why they skip elsewhere.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from so8t.errors import TrainError
from so8t.safety import SafetyHead
from so8t.training import TrainOptions
from so8t.training.batching import Batch
from so8t.training.losses import PARTS, batch_counts, class_weights, combine, loss_sums

VOCAB, HIDDEN = 32, 16
NO_CUDA = "needs a CUDA device (torch.cuda.is_available() is False here); CI has none"


def _batch() -> Batch:
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    targets = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    return Batch(ids, mask, targets, torch.tensor([2, -1]))  # REFUSE, unlabelled


class _Inner(nn.Module):
    """Stands in for Qwen2-VL's decoder: final hidden states from an embedding."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.rope_deltas = None

    def forward(self, input_ids, attention_mask, use_cache):
        return SimpleNamespace(last_hidden_state=self.embed(input_ids))


def _model(device: str):
    torch.manual_seed(0)
    inner, head = _Inner(), SafetyHead(HIDDEN, seed=0)
    lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
    for module in (inner, head, lm_head):
        module.to(device)
    return SimpleNamespace(qwen=SimpleNamespace(model=inner, lm_head=lm_head), safety_head=head)


def test_batch_counts_by_hand():
    # LM targets after the first position: 3 + 2; safety: one REFUSE row (weight 5); PET triples: 3 + 1
    assert batch_counts(_batch()).tolist() == [5.0, 5.0, 4.0]


def test_the_loss_code_runs_where_the_batch_is():
    """On today's code before the fix this raised ``indices should be either on cpu or on the same device
    as the indexed tensor``: the class weights were made on the CPU whatever the batch's device."""
    batch = _batch().to("meta")
    assert batch.lm_index.device.type == "meta"
    counts = batch_counts(batch)
    assert counts.device.type == "meta" and counts.shape == (3,)
    out = loss_sums(_model("meta"), batch)
    assert all(v.device.type == "meta" for v in out.sums.values()), out.sums
    total, parts = combine(out.sums, out.counts, {p: 1.0 for p in PARTS}, 0, 10)
    assert total.device.type == "meta" and parts.shape == (3,)


def test_the_sums_agree_with_a_direct_computation():
    """The sync-free forms (LM positions found on the host, unlabelled rows weighted 0, PET as a sum)
    equal the plain per-row computation."""
    import torch.nn.functional as F

    from so8t.pet import pet_loss

    batch, model = _batch(), _model("cpu")
    out = loss_sums(model, batch)
    hidden = model.qwen.model.embed(batch.input_ids)
    select = batch.targets[:, 1:] != 0
    lm = F.cross_entropy(model.qwen.lm_head(hidden[:, :-1][select]), batch.input_ids[:, 1:][select], reduction="sum")
    logits = model.safety_head.classify(hidden, batch.attention_mask)
    safety = F.cross_entropy(logits[:1], batch.labels[:1], reduction="sum") * class_weights()[2]
    pet = pet_loss(hidden, batch.attention_mask) * 4
    for name, want in (("lm", lm), ("safety", safety), ("pet", pet)):
        assert torch.allclose(out.sums[name], want.float(), rtol=1e-6, atol=0), (name, out.sums[name], want)


def test_device_auto_and_dtype_auto(monkeypatch, tmp_path):
    options = TrainOptions(tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "out")
    assert (options.device, options.compute_dtype) == ("auto", "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert (options.resolved().device, options.resolved().compute_dtype) == ("cpu", "float32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert (options.resolved().device, options.resolved().compute_dtype) == ("cuda", "bfloat16")
    kept = TrainOptions(tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "out", device="cuda:1", compute_dtype="float32")
    assert (kept.resolved().device, kept.resolved().compute_dtype) == ("cuda:1", "float32")


def test_cuda_without_cuda_is_one_line(monkeypatch, tmp_path, capsys):
    from so8t.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainError, match="sees no CUDA device"):
        TrainOptions(tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "out", device="cuda").resolved()
    with pytest.raises(TrainError, match="expected auto, cpu, cuda"):
        TrainOptions(tmp_path / "m", tmp_path / "d.jsonl", tmp_path / "out", device="tpu").resolved()
    rc = main(["train", "--so8t-model", str(tmp_path), "--train-data", str(tmp_path / "d.jsonl"),
               "--output-model", str(tmp_path / "out"), "--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "sees no CUDA device" in err[0], err
    assert not (tmp_path / "out").exists()


# -- on a GPU ---------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)


def _train(so8t_dir, data, out, device, dtype, steps=4, resume=False):
    from so8t.training import train

    return train(TrainOptions(so8t_dir, data, out, steps=steps, batch_size=8, device=device, compute_dtype=dtype,
                              save_every=2, resume=resume, progress=False, seed=0))


def _generators(out) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    from so8t.checkpoint.so8t_dir import GATES_FILE

    return load_file(str(out / GATES_FILE))


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_train_on_cuda_writes_a_checkpoint(so8t_random_dir, tmp_path, dtype):
    from so8t.data import DEMO_TRAIN

    result = _train(so8t_random_dir, DEMO_TRAIN, tmp_path / "out", "cuda", dtype)
    assert result.steps == 4 and result.head_trained and (tmp_path / "out" / "config.json").is_file()
    assert all(torch.isfinite(t).all() for t in _generators(tmp_path / "out").values())


@cuda
@pytest.mark.cuda
def test_cuda_resume_continues_the_same_run(so8t_random_dir, tmp_path, monkeypatch):
    """Four steps straight, against four steps interrupted after the state saved at step 2 and resumed
    with the same options (the state's fingerprint includes ``steps``: a resume must not change them)."""
    from so8t.data import DEMO_TRAIN
    from so8t.training import loop
    from so8t.training.loop import TrainInterrupted

    _train(so8t_random_dir, DEMO_TRAIN, tmp_path / "whole", "cuda", "float32", steps=4)
    real_step = loop.train_step

    def interrupted(session, step):
        if step == 3:
            raise KeyboardInterrupt
        return real_step(session, step)

    monkeypatch.setattr(loop, "train_step", interrupted)
    with pytest.raises(TrainInterrupted) as stopped:
        _train(so8t_random_dir, DEMO_TRAIN, tmp_path / "part", "cuda", "float32", steps=4)
    assert stopped.value.last_step == 2 and not (tmp_path / "part").exists()
    monkeypatch.setattr(loop, "train_step", real_step)
    _train(so8t_random_dir, DEMO_TRAIN, tmp_path / "part", "cuda", "float32", steps=4, resume=True)
    whole, part = _generators(tmp_path / "whole"), _generators(tmp_path / "part")
    # cuBLAS may pick other kernels across processes: agreement to float32 rounding of a few steps
    assert sorted(whole) == sorted(part)
    assert all(torch.allclose(whole[k], part[k], rtol=0, atol=1e-5) for k in whole)


@cuda
@pytest.mark.cuda
def test_cpu_and_cuda_train_the_same_generators(so8t_random_dir, tmp_path):
    """float32, 5 steps from the same start. Tolerance: 5 Adam steps move a generator by at most 5 * lr
    (Adam's step is bounded by the learning rate), and the two devices differ by float32 rounding in
    the forward and backward passes, far below one step; 1e-3 of the largest generator plus 1e-4."""
    from so8t.data import DEMO_TRAIN

    _train(so8t_random_dir, DEMO_TRAIN, tmp_path / "cpu", "cpu", "float32", steps=5)
    _train(so8t_random_dir, DEMO_TRAIN, tmp_path / "gpu", "cuda", "float32", steps=5)
    cpu, gpu = _generators(tmp_path / "cpu"), _generators(tmp_path / "gpu")
    scale = max(float(t.abs().max()) for t in cpu.values())
    worst = max(float((cpu[k] - gpu[k]).abs().max()) for k in cpu)
    assert worst <= 1e-3 * scale + 1e-4, (worst, scale)
