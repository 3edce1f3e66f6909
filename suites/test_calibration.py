"""The safety head's operating point (so8t.training.calibration): the rule on hand-made logits, the fold, and
``so8t train --safety-calibration-data`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from so8t.cli import main
from so8t.data import DEMO_EVAL, DEMO_TRAIN
from so8t.safety import SafetyHead
from so8t.training.calibration import choose_offset, fold_offset

A, E, R = 0, 1, 2  # ALLOW, ESCALATE, REFUSE
THREADS = 1


def logits_of(rows: list[tuple[float, float, float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_safe_prompts_a_little_refused_are_moved_back():
    # 4 safe prompts whose REFUSE logit leads by 0.5, 4 harmful ones whose REFUSE logit leads by 3; ESCALATE far
    # below everywhere. Offset 0 refuses every safe prompt. Worked by hand: with d_R in [-2.75, -0.5] every
    # prompt is right (at -0.5 ALLOW and REFUSE tie and argmax takes the first, ALLOW); d_E is free over the
    # whole grid. The best region's mean is (d_E, d_R) = (0, -1.625); the nearest grid points are -1.5 and
    # -1.75 (equally near), and the smaller offset wins.
    logits = logits_of([(0.0, -10.0, 0.5)] * 4 + [(0.0, -10.0, 3.0)] * 4)
    labels = torch.tensor([A] * 4 + [R] * 4)
    result = choose_offset(logits, labels)
    assert result.offset == (0.0, 0.0, -1.5)
    assert result.before["over_refusal_rate"] == 1.0 and result.before["refuse_recall"] == 1.0
    assert result.after["over_refusal_rate"] == 0.0 and result.after["refuse_recall"] == 1.0
    assert result.after["accuracy"] == 1.0


def test_the_refuse_recall_floor_is_kept():
    # One harmful prompt leads by only 0.5, less than the safe prompt's 1.0: no offset both refuses it and
    # answers the safe one. With the floor 1.0 the harmful one stays refused (over-refusal stays 1/1); with
    # the floor 0.5 the offset answers the safe prompt and gives that harmful one up (recall 1/2).
    logits = logits_of([(0.0, -10.0, 1.0), (0.0, -10.0, 0.5), (0.0, -10.0, 4.0)])
    labels = torch.tensor([A, R, R])
    strict = choose_offset(logits, labels, min_refuse_recall=1.0)
    assert strict.after["refuse_recall"] == 1.0 and strict.after["over_refusal_rate"] == 1.0
    loose = choose_offset(logits, labels, min_refuse_recall=0.5)
    assert loose.after["refuse_recall"] == 0.5 and loose.after["over_refusal_rate"] == 0.0


def test_unreachable_floor_takes_the_highest_recall():
    logits = logits_of([(20.0, 0.0, 0.0), (0.0, 0.0, 1.0)])  # the first REFUSE prompt is out of the grid's reach
    labels = torch.tensor([R, R])
    result = choose_offset(logits, labels, min_refuse_recall=1.0)
    assert result.after["refuse_recall"] == 0.5


def test_fold_moves_the_decision_exactly_by_the_offset():
    head = SafetyHead(16, seed=3).double()
    hidden = torch.randn(64, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    before = head(hidden).detach()
    offset = (0.0, 1.25, -2.5)
    fold_offset(head, offset)
    after = head(hidden).detach()
    assert torch.equal(after.argmax(-1), (before + torch.tensor(offset, dtype=torch.float64)).argmax(-1))
    assert torch.allclose(after - before, torch.tensor(offset, dtype=torch.float64).expand_as(after),
                          rtol=0, atol=1e-12)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.mark.heavy  # a training run: grows with the model
@pytest.mark.whole_model(copies=1, dtype="float32")  # the training model (so8t.training.session)
def test_train_folds_the_chosen_offset_into_the_head(so8t_random_dir, tmp_path):
    labelled = [line for line in DEMO_EVAL.read_text().splitlines() if json.loads(line).get("label")]
    calibration = _write(tmp_path / "cal.jsonl", labelled[::2])
    common = ["train", "--so8t-model", str(so8t_random_dir), "--train-data", str(DEMO_TRAIN), "--steps", "2",
              "--batch-size", "4", "--no-progress", "--threads", str(THREADS), "--save-every", "0"]
    assert main([*common, "--output-model", str(tmp_path / "plain")]) == 0
    assert main([*common, "--output-model", str(tmp_path / "cal"), "--safety-calibration-data", str(calibration),
                 "--min-refuse-recall", "0.5"]) == 0
    plain, cal = load_file(str(tmp_path / "plain" / "so8t_gates.safetensors")), \
        load_file(str(tmp_path / "cal" / "so8t_gates.safetensors"))
    record = json.loads((tmp_path / "cal" / "config.json").read_text())["so8t"]["training"]["calibration"]
    assert record["data"]["name"] == "cal.jsonl" and record["min_refuse_recall"] == 0.5
    offset = [record["offset"][c] for c in ("ALLOW", "ESCALATE", "REFUSE")]
    assert offset[0] == 0.0 and record["after"]["refuse_recall"] >= 0.5
    assert sorted(plain) == sorted(cal)
    for key in plain:  # training is the same run; only the final bias moved, by the recorded offset
        if key == "safety_head.2.bias":
            assert torch.allclose(cal[key] - plain[key], torch.tensor(offset, dtype=torch.float32), atol=1e-6)
        else:
            assert torch.equal(plain[key], cal[key]), key
    none = json.loads((tmp_path / "plain" / "config.json").read_text())["so8t"]["training"]["calibration"]
    assert none is None
    metrics = (tmp_path / "cal.train" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["calibration"]["offset"] for line in metrics if "calibration" in line] == \
        [record["offset"]]


def test_unlabelled_calibration_line_is_one_line_error(so8t_random_dir, tmp_path, capsys):
    calibration = _write(tmp_path / "cal.jsonl", [json.dumps({"messages": [{"role": "user", "content": "Hi"}],
                                                              "label": "ALLOW"}), json.dumps({"text": "no label"})])
    out = tmp_path / "out"
    rc = main(["train", "--so8t-model", str(so8t_random_dir), "--train-data", str(DEMO_TRAIN), "--steps", "1",
               "--output-model", str(out), "--safety-calibration-data", str(calibration), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{calibration}:2" in err[0] and "label" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.jsonl"]


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_min_refuse_recall_out_of_range(so8t_random_dir, tmp_path, capsys, value):
    rc = main(["train", "--so8t-model", str(so8t_random_dir), "--train-data", str(DEMO_TRAIN),
               "--output-model", str(tmp_path / "o"), "--min-refuse-recall", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--min-refuse-recall" in err[0]
    assert not (tmp_path / "o").exists()
