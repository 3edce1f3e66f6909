"""``so8t train``: data errors, what is trainable, group laws through training, identity, resume, metrics."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from so8t import group
from so8t.cli import main
from so8t.data import DEMO_EVAL, DEMO_TRAIN
from so8t.errors import DataError
from so8t.training import TrainInterrupted, TrainOptions, train
from so8t.training.distributed import World

USER = {"role": "user", "content": "How do I bake bread?"}
#: One torch thread: the gate's 2 cores are often shared, and OpenMP barriers on a tiny model under
#: contention cost 5x (20 demo steps: 9 s on 1 thread, 52 s on 2 with 3 other jobs running).
THREADS = 1


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines))
    return path


@pytest.fixture(scope="module")
def tokenizer(so8t_random_dir):
    from so8t.training.data import load_tokenizer

    return load_tokenizer(so8t_random_dir)


# -- data -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ({"messages": [USER], "label": "MAYBE"}, "unknown label 'MAYBE'"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "unknown role 'robot'"),
        ({"messages": [], "label": "ALLOW"}, "non-empty list"),
        ({"text": "a", "messages": [USER]}, "exactly one of"),
        ({"text": "hi", "labels": "ALLOW"}, "unknown keys"),
    ],
)
def test_bad_line_names_file_and_line(tokenizer, tmp_path, line, message):
    from so8t.training.data import load_dataset

    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "fine"}, "", line])
    with pytest.raises(DataError) as info:
        load_dataset(path, tokenizer, 32768)
    assert str(info.value).startswith(f"{path}:3: ") and message in str(info.value)


def test_empty_file_is_refused(tokenizer, tmp_path):
    from so8t.training.data import load_dataset

    path = write_jsonl(tmp_path / "e.jsonl", ["", "  "])
    with pytest.raises(DataError, match="empty data file"):
        load_dataset(path, tokenizer, 32768)


def test_a_line_past_the_tokenizer_limit_is_judged_by_the_context_alone(so8t_random_dir, tmp_path):
    """transformers warns when a text passes the tokenizer's ``model_max_length`` (32768 in real Qwen2
    checkpoints, the same as their context). The data loader checks the length against the model's context
    itself, so that warning would be a second line beside the one-line error: it must not be logged."""
    from so8t.training.data import load_dataset, load_tokenizer

    tok = load_tokenizer(so8t_random_dir)
    tok.model_max_length = 4
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": " a" * 16}])
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # transformers' logger does not propagate to pytest's caplog
    logging.getLogger("transformers").addHandler(handler)
    try:
        assert len(load_dataset(path, tok, 32768)) == 1
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert [r.getMessage() for r in records] == []


@pytest.mark.parametrize("case", ["malformed", "too_long", "empty"])
def test_cli_bad_data_exits_2_and_writes_nothing(so8t_random_dir, tmp_path, capsys, case):
    from so8t.checkpoint import CheckpointReader

    context = int(CheckpointReader(so8t_random_dir).text_config["max_position_embeddings"])
    lines = {
        "malformed": [{"text": "ok"}, {"messages": [USER], "label": "ALLOW"}, '{"text": '],
        "too_long": [{"text": "ok"}, {"text": " a" * (context + 1)}],
        "empty": [],
    }[case]
    data = write_jsonl(tmp_path / "d.jsonl", lines)
    out = tmp_path / "out"
    rc = main(["train", "--so8t-model", str(so8t_random_dir), "--train-data", str(data),
               "--output-model", str(out), "--steps", "1", "--no-progress", "--threads", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    expected = {"malformed": f"{data}:3: not valid JSON", "too_long": f"{data}:2: {context + 1} tokens, longer",
                "empty": f"{data}: empty data file"}[case]
    assert expected in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]  # no output, no state, no temp


def test_chat_rendering_targets_assistant_tokens_and_matches_run_prompt(tokenizer):
    from so8t.llama.chat import chat_prompt
    from so8t.training.data import parse_line

    prompt = parse_line(tokenizer, json.dumps({"messages": [USER], "label": "REFUSE"}), "f:1", 999)
    assert list(prompt.input_ids) == tokenizer(chat_prompt(USER["content"]), add_special_tokens=False)["input_ids"]
    assert prompt.label == 2 and not any(prompt.targets)
    chat = {"messages": [USER, {"role": "assistant", "content": "Knead and bake."}]}
    ex = parse_line(tokenizer, json.dumps(chat), "f:2", 999)
    targets = [tok for tok, t in zip(ex.input_ids, ex.targets) if t]
    assert tokenizer.decode(targets) == "Knead and bake.<|im_end|>"
    text = parse_line(tokenizer, json.dumps({"text": "plain words here"}), "f:3", 999)
    assert text.targets == (0,) + (1,) * (len(text.input_ids) - 1) and text.label is None


# -- what trains ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(so8t_random_dir, tmp_path_factory):
    from so8t.training.session import open_session

    out = tmp_path_factory.mktemp("train") / "out"
    flush = torch.set_flush_denormal(True)  # as train() does (Note [denormals] in so8t.training.loop)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield open_session(TrainOptions(so8t_random_dir, DEMO_TRAIN, out, steps=10, batch_size=4), World())
    torch.set_num_threads(threads)
    if flush:
        torch.set_flush_denormal(False)


@pytest.mark.heavy  # a training run: grows with the model
@pytest.mark.whole_model(copies=1, dtype="float32")  # the training model (so8t.training.session)
def test_only_gates_and_head_train(session):
    from so8t.adapters.qwen2vl import GATE_NAMES
    from so8t.training.loop import train_step

    model = session.model
    train_step(session, 0)
    frozen = list(model.qwen.parameters())
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    optimised = {id(p) for g in session.optimizer.param_groups for p in g["params"]}
    assert optimised.isdisjoint(id(p) for p in frozen)
    assert set(session.optimizer.state) and {id(p) for p in session.optimizer.state} <= optimised
    gates = [layer.gate(name).generators for layer in model.gates for name in GATE_NAMES]
    head = list(model.safety_head.parameters())
    assert optimised == {id(p) for p in gates + head}
    assert len(gates) == 4 * len(model.gates) and all(p.grad is not None for p in gates + head)
    assert any(bool(p.grad.abs().sum() > 0) for p in gates)  # the gates do get a gradient


@pytest.mark.heavy  # a training run: grows with the model
@pytest.mark.whole_model(copies=1, dtype="float32")  # the training model (so8t.training.session)
@settings(max_examples=6, deadline=None)
@given(lr=st.floats(1e-4, 1.0), steps=st.integers(1, 3))
def test_every_gate_stays_in_so8(session, lr, steps):
    from so8t.training.loop import train_step

    session.scheduler.base_lrs = [lr]  # the schedule scales this peak
    for group_ in session.optimizer.param_groups:
        group_["lr"] = lr
    for step in range(steps):
        train_step(session, step)
    for layer in session.model.gates:
        for gate in (layer.attn_rot, layer.attn_pair.safe, layer.attn_pair.cmd, layer.mlp_rot):
            g = gate.generators.detach()
            assert torch.isfinite(g).all()
            assert group.in_so8(group.rotation(g.double(), gate.map))  # as the sidecar stores them
            assert group.in_so8(gate.rotations().detach())  # and as the training forward uses them


# -- identity -------------------------------------------------------------------------------------


@pytest.mark.heavy  # a training run: grows with the model
@pytest.mark.whole_model(copies=2, dtype="float32")  # the trained SO8T model and the plain one
@pytest.mark.parametrize("steps, weights", [(0, (1.0, 1.0, 1e-3)), (3, (0.0, 0.0, 0.0))])
def test_identity_reproduces_source_logits(so8t_identity_dir, source_checkpoint, text_inputs, tmp_path, steps, weights):
    from so8t.model import SO8TModel, forward_qwen2vl, load_plain_qwen2vl

    lm, safety, pet = weights
    out = tmp_path / "out"
    train(TrainOptions(so8t_identity_dir, DEMO_TRAIN, out, steps=steps, batch_size=4, lm_weight=lm,
                       safety_weight=safety, pet_weight=pet, progress=False, threads=THREADS))
    trained = SO8TModel.from_dir(out)
    assert all(not layer.gate(n).generators.any() for layer in trained.gates for n in ("attn_rot", "mlp_rot"))
    with torch.no_grad():
        ours = trained(**text_inputs).logits
        ref = forward_qwen2vl(load_plain_qwen2vl(source_checkpoint), **text_inputs).logits
    assert torch.equal(ours, ref)
    config = json.loads((out / "config.json").read_text())["so8t"]["training"]
    assert config["safety_head_trained"] is False


# -- resume and metrics ---------------------------------------------------------------------------


def gates_of(path: Path) -> dict:
    return load_file(str(path / "so8t_gates.safetensors"))


@pytest.mark.heavy  # a training run: grows with the model
@pytest.mark.whole_model(copies=1, dtype="float32")  # the training model (so8t.training.session)
def test_resume_continues_bit_for_bit(so8t_random_dir, tmp_path, monkeypatch, capsys):
    from so8t.errors import TrainError
    from so8t.training import loop

    small_eval = write_jsonl(tmp_path / "eval.jsonl", DEMO_EVAL.read_text().splitlines()[::10])
    labelled = [line for line in DEMO_EVAL.read_text().splitlines() if json.loads(line).get("label")]
    calibration = write_jsonl(tmp_path / "cal.jsonl", labelled[1::5])
    common = ["--so8t-model", str(so8t_random_dir), "--train-data", str(DEMO_TRAIN), "--eval-data",
              str(small_eval), "--safety-calibration-data", str(calibration), "--steps", "10", "--batch-size", "4", "--save-every", "3", "--eval-every", "5",
              "--no-progress", "--threads", str(THREADS)]
    assert main(["train", *common, "--output-model", str(tmp_path / "straight")]) == 0
    with pytest.raises(TrainError, match="different batch_size"):
        train(TrainOptions(so8t_random_dir, DEMO_TRAIN, tmp_path / "straight", eval_data=small_eval, steps=10,
                           batch_size=3, resume=True, progress=False, threads=THREADS))
    real_step = loop.train_step

    def interrupted(session, step):
        if step == 7:
            raise KeyboardInterrupt
        return real_step(session, step)

    monkeypatch.setattr(loop, "train_step", interrupted)
    argv = ["train", *common, "--output-model", str(tmp_path / "resumed")]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "last complete checkpoint: step 6" in err and "resume with: so8t train " in err and "--resume" in err
    assert not (tmp_path / "resumed").exists()
    monkeypatch.setattr(loop, "train_step", real_step)
    assert main([*argv, "--resume"]) == 0
    a, b = gates_of(tmp_path / "straight"), gates_of(tmp_path / "resumed")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    straight = (tmp_path / "straight.train" / "metrics.jsonl").read_text()
    assert straight == (tmp_path / "resumed.train" / "metrics.jsonl").read_text()
    records = [json.loads(line) for line in straight.splitlines()]
    steps = [r for r in records if "eval" not in r and "calibration" not in r]
    assert [r["step"] for r in steps] == list(range(1, 11))
    assert [r["pet_phase"] for r in steps] == [1, 1, 1, 2, 2, 2, 2, 3, 3, 3]  # 30% / 70% of 10 steps
    assert all({"lm", "safety", "pet", "lr", "loss", "grad_max"} <= set(r) for r in steps)
    assert [r["step"] for r in records if "eval" in r] == [5, 10]
    assert [r["step"] for r in records if "calibration" in r] == [10]  # once, after the last step


@pytest.mark.heavy  # a training run: grows with the model
@pytest.mark.whole_model(copies=1, dtype="float32")  # the training model (so8t.training.session)
def test_interrupt_before_any_checkpoint_says_so(so8t_random_dir, tmp_path, monkeypatch):
    from so8t.training import loop

    def boom(session, step):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train_step", boom)
    with pytest.raises(TrainInterrupted) as info:
        train(TrainOptions(so8t_random_dir, DEMO_TRAIN, tmp_path / "o", steps=2, batch_size=2, progress=False, threads=THREADS))
    assert info.value.last_step is None and not (tmp_path / "o").exists()


def test_safety_metrics_by_hand():
    from so8t.training.metrics import safety_metrics

    # rows true ALLOW/ESCALATE/REFUSE, columns predicted
    m = safety_metrics([[8, 1, 1], [2, 5, 3], [1, 0, 9]])
    assert m["accuracy"] == pytest.approx(22 / 30)
    assert m["refuse_recall"] == pytest.approx(9 / 10) and m["escalate_recall"] == pytest.approx(5 / 10)
    assert m["over_compliance_rate"] == pytest.approx(3 / 20)  # (2 + 1) dangerous answered ALLOW
    assert m["over_refusal_rate"] == pytest.approx(2 / 10)  # (1 + 1) safe prompts flagged
    assert m["per_class"]["ALLOW"]["precision"] == pytest.approx(8 / 11)
    assert m["per_class"]["ESCALATE"]["precision"] == pytest.approx(5 / 6)
    assert m["majority_baseline"] == pytest.approx(10 / 30)
    assert safety_metrics([[0, 0, 0], [0, 0, 0], [4, 0, 0]])["per_class"]["REFUSE"]["precision"] is None
    # 95% Wilson intervals of those three rates, pinned from statsmodels 0.15.0
    # (proportion_confint(k, n, alpha=0.05, method="wilson"); not a dependency of the project)
    assert m["refuse_recall_ci95"] == pytest.approx([0.5958499732047614, 0.982123786904927], abs=1e-12)
    assert m["over_refusal_rate_ci95"] == pytest.approx([0.056682151454375246, 0.5098375284633583], abs=1e-12)
    assert m["over_compliance_rate_ci95"] == pytest.approx([0.052368745896216595, 0.36041886474075696], abs=1e-12)
    assert safety_metrics([[0, 0, 0], [0, 0, 0], [4, 0, 0]])["over_refusal_rate_ci95"] is None  # no safe prompt


@pytest.mark.parametrize(("k", "n", "expected"), [
    # statsmodels 0.15.0 proportion_confint(k, n, alpha=0.05, method="wilson"), pinned
    (24, 25, [0.8045593626380626, 0.9929037664980128]),
    (22, 25, [0.7004420607907267, 0.9583318284955964]),
    (0, 40, [0.0, 0.08762160119728668]),
    (4, 40, [0.03957952868260635, 0.23051775227522303]),
    (40, 40, [0.9123783988027134, 1.0]),
    (1, 3, [0.06149194472039626, 0.7923403991979523]),
])
def test_wilson_interval_is_the_published_one(k, n, expected):
    """The hand-written Wilson interval (5 lines; scipy or statsmodels would be a dependency for it alone)
    against statsmodels' values, including both ends of the range, where it must stay inside [0, 1]."""
    from so8t.training.metrics import wilson_interval

    assert wilson_interval(k, n) == pytest.approx(expected, abs=1e-12)
