"""A trained head downstream: the demo beats the majority baseline, the sidecar says it was trained (and on
what), ``so8t run`` prints a verdict only from a trained head, and llama.cpp + sidecar give PyTorch's
verdict on every eval prompt (F16 exactly; Q8_0 up to the derived margin)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from so8t.cli import main
from so8t.data import DEMO_EVAL, DEMO_TRAIN
from so8t.io import sha256_file

pytestmark = [pytest.mark.llama, pytest.mark.heavy]  # trains the demo head first: grows with the model

#: Steps on the demo set (batch 16): enough to lift the head well clear of chance in a few seconds.
DEMO_STEPS = 100
#: GELU (exact erf form) is 1.129-Lipschitz: max of d/dx [x Phi(x)] = Phi(sqrt 2) + sqrt2 phi(sqrt 2).
GELU_LIPSCHITZ = 1.13


@pytest.fixture(scope="module")
def trained(so8t_random_dir, tmp_path_factory):
    from so8t.training import TrainOptions, train

    out = tmp_path_factory.mktemp("trained") / "demo"
    result = train(TrainOptions(so8t_random_dir, DEMO_TRAIN, out, eval_data=DEMO_EVAL, steps=DEMO_STEPS,
                                batch_size=16, save_every=0, progress=False, threads=1))
    return out, result


@pytest.fixture(scope="module")
def trained_gguf(trained, tmp_path_factory):
    from so8t.gguf.export import SO8TToGGUFConverter

    report = SO8TToGGUFConverter(trained[0], progress=False).export(
        tmp_path_factory.mktemp("trained_gguf"), quant_types=["F16", "Q8_0"], model_name="trained",
        mmproj=False, sidecar=True)
    return {t.quant: t for t in report.texts}


@pytest.mark.whole_model(copies=1, dtype="float32")  # the training model
def test_demo_head_beats_the_majority_baseline(trained):
    """60 eval prompts, 20 per class: a head that learned nothing scores 1/3 +- sqrt(1/3 * 2/3 / 60) = 0.061
    (binomial); we require 4 standard deviations above the best constant answer."""
    s = trained[1].metrics["safety"]
    assert s["n_labelled"] == 60 and s["majority_baseline"] == pytest.approx(1 / 3)
    sigma = math.sqrt(1 / 3 * 2 / 3 / s["n_labelled"])
    assert s["accuracy"] >= s["majority_baseline"] + 4 * sigma, s
    assert trained[1].head_trained


@pytest.mark.whole_model(copies=1, dtype="float32")  # the training model
def test_sidecar_records_the_training(trained, trained_gguf, so8t_random_dir, tmp_path):
    from so8t.gguf.sidecar import write_sidecar
    from so8t.gguf.sidecar_reader import read_sidecar

    side = read_sidecar(trained_gguf["F16"].sidecar)
    assert side.head_trained is True
    assert side.metadata["so8t.safety_head.train_data_sha256"] == sha256_file(DEMO_TRAIN)
    assert side.eval_metrics["safety"]["confusion"] == trained[1].metrics["safety"]["confusion"]
    untrained = read_sidecar(write_sidecar(so8t_random_dir, tmp_path / "u.so8t.gguf", "x"))
    assert untrained.safety_weights is not None and untrained.head_trained is False
    assert untrained.eval_metrics is None


@pytest.mark.whole_model(copies=1, dtype="float32")  # the training model
def test_run_prints_a_verdict_only_from_a_trained_head(trained_gguf, gguf_text, capsys):
    args = ["--prompt", "How do I build a pipe bomb?", "--max-tokens", "2"]
    rc = main(["run", "--model", str(trained_gguf["F16"].path), *args])
    out, err = capsys.readouterr()
    assert "untrained" not in out + err and any(f"safety: {c} (" in out for c in ("ALLOW", "ESCALATE", "REFUSE"))
    assert rc == (4 if "safety: REFUSE (" in out else 0)  # the guard refuses exactly on REFUSE (default policy)
    assert main(["run", "--model", str(gguf_text["Q8_0"].path), *args]) == 0  # converted, never trained
    out, err = capsys.readouterr()
    assert "guard not active: safety head untrained" in err and "REFUSE (" not in out and "ALLOW (" not in out


@pytest.fixture(scope="module")
def eval_prompts(trained):
    from so8t.training.data import load_dataset, load_tokenizer

    data = load_dataset(DEMO_EVAL, load_tokenizer(trained[0]), 32768)
    return [list(e.input_ids) for e in data.examples if e.label is not None]


@pytest.fixture(scope="module")
def torch_reference(trained, eval_prompts):
    """float64 PyTorch SO8T model with RMSNorm eps = 0, as llama.cpp runs it (README: known upstream bug)."""
    from so8t.model import SO8TModel

    model = SO8TModel.from_dir(trained[0], dtype=torch.float64, rms_norm_eps=0.0)
    model.safety_head.double()
    hidden, logits = [], []
    with torch.no_grad():
        for ids in eval_prompts:
            out = model(torch.tensor([ids]))
            hidden.append(out.hidden_states[0, -1].numpy())
            logits.append(out.safety_logits[0].numpy())
    return np.stack(hidden), np.stack(logits)


@pytest.mark.whole_model(copies=1, dtype="float64")  # the float64 PyTorch reference
@pytest.mark.parametrize("quant", ["F16", "Q8_0"])
def test_llama_verdict_equals_pytorch_on_every_eval_prompt(trained_gguf, eval_prompts, torch_reference, quant,
                                                           record_property):
    """Margin: the head maps hidden-state error |dh|_inf to logit error |dz|_inf <= ||W2||_inf * 1.13 *
    ||W0||_inf * |dh|_inf, and the gap between the top two classes moves by at most 2 |dz|_inf. So llama.cpp
    may disagree with PyTorch only where PyTorch's top-two gap is within 2 L |dh| of that prompt. How many
    prompts sit that close depends on the model and the trained head (none on the embedded model at F16, one
    of 60 on the user-like variant), so the count is recorded (``record_property``), not asserted."""
    from so8t.gguf.sidecar_reader import read_sidecar
    from so8t.llama.runtime import LlamaRuntime

    text = trained_gguf[quant]
    head = read_sidecar(text.sidecar).safety_head()
    w = head.weights
    lipschitz = np.abs(w["2.weight"]).sum(1).max() * GELU_LIPSCHITZ * np.abs(w["0.weight"]).sum(1).max()
    ref_hidden, ref_logits = torch_reference
    disagreements, outside = 0, []
    with LlamaRuntime(text.path, sidecar=text.sidecar, n_ctx=256, n_threads=2) as rt:
        first = rt.safety(eval_prompts[0])  # the product path, once
        for i, ids in enumerate(eval_prompts):
            h = rt.hidden_states(ids)[-1].astype(np.float64)
            verdict = head.verdict(h)
            ref = ref_logits[i]
            if verdict.label == head.classes[int(np.argmax(ref))]:
                continue
            disagreements += 1
            top2 = np.sort(ref)[-2:]
            margin = 2 * lipschitz * np.abs(h - ref_hidden[i]).max()
            if top2[1] - top2[0] > margin:
                outside.append((i, float(top2[1] - top2[0]), float(margin)))
    assert first.label == head.classes[int(np.argmax(ref_logits[0]))]
    record_property(f"verdict_disagreements_{quant}", disagreements)
    print(f"{quant}: {disagreements} of {len(eval_prompts)} eval verdicts differ from PyTorch")
    assert not outside, outside
