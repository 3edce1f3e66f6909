"""``so8t pipeline``: the one-command job on the embedded default model, its outputs and its refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple

import pytest
from gguf import GGUFReader

from so8t.cli import main
from so8t.errors import So8tError
from so8t.pipeline import environment

DiskUsage = namedtuple("DiskUsage", "total used free")


#: what ``make demo`` runs (Makefile), in a fresh directory; ``--notify`` only adds the bell tested below
DEMO_COMMAND = ("pipeline", "--demo", "--notify")
DEMO_TYPES = ["F16", "Q8_0", "Q4_K_M"]
#: the summary's tables fit a terminal of this width (explanations go under them, wrapped)
TERMINAL = 110


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``so8t pipeline --demo`` exactly as ``make demo`` runs it: random gates, a trained safety head, the
    default types F16, Q8_0 and Q4_K_M, every file validated, output ``./so8t-demo``."""
    cwd = tmp_path_factory.mktemp("pipeline")
    done = subprocess.run([sys.executable, "-m", "so8t.cli", *DEMO_COMMAND], cwd=cwd,
                          capture_output=True, text=True, timeout=900, check=False)
    return cwd / "so8t-demo", done


def test_make_demo_runs_this_command():
    from pathlib import Path

    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    assert "$(BIN)/so8t pipeline --demo\n" in makefile


def test_demo_succeeds_and_prints_the_summary(demo_run):
    """The README's first command ends green: exit 0, every file PASS, tables within a terminal."""
    _, done = demo_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "PIPELINE OK" in done.stdout
    for step in ("environment + input check", "convert", "train", "export", "validate"):
        assert step in done.stdout
    for quant in DEMO_TYPES:
        assert f"so8t-demo-{quant}.gguf" in done.stdout
    summary = done.stdout.split("\ntrained safety head")[0]  # the tables and the notes under them
    wide = [line for line in summary.splitlines() if len(line) > TERMINAL]
    assert not wide, wide


def test_demo_writes_every_artefact(demo_run):
    out, _ = demo_run
    text = out / "gguf" / "so8t-demo-F16.gguf"
    sidecar = out / "gguf" / "so8t-demo-F16.so8t.gguf"
    mmproj = out / "gguf" / "mmproj-so8t-demo-f16.gguf"
    for path in (text, sidecar, mmproj, out / "so8t-demo-so8t" / "config.json"):
        assert path.is_file(), path
    arch = GGUFReader(text).fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "qwen2vl"
    so8t_config = json.loads((out / "so8t-demo-so8t" / "config.json").read_text())["so8t"]
    assert so8t_config["safety_head"] is True
    assert not [p for p in out.rglob(".*partial*")]


def test_summary_and_validation_reports_agree(demo_run):
    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    texts = [f for f in summary["files"] if f["kind"] == "text"]
    assert [t["quant"] for t in texts] == DEMO_TYPES
    for text in texts:
        report = json.loads((out / "reports" / f"validate-{text['quant']}.json").read_text())
        assert report["overall"] == "PASS" == text["validation"]
        parity = next(c for c in report["checks"] if c["name"] == "parity.logits")
        assert parity["status"] == "PASS"
        cost = (parity["details"] or {}).get("quantization_cost")
        if text["quant"] != "F16":  # block types carry what the type costs against the plain source model
            assert cost["ratio"] == pytest.approx(text["cost_ratio"])
            assert cost["ratio"] == pytest.approx(cost["so8t_mean_kl"] / cost["plain_mean_kl"])
            assert ("warning" in parity["details"]) == (cost["ratio"] > 2.0), parity["details"]
            sensitive = " ".join(w.split("; ")[0] for w in summary["warnings"])  # before "; cheapest type ..."
            assert (f"{text['quant']} (" in sensitive) == (cost["ratio"] > 2.0), summary["warnings"]
    for key in ("torch", "transformers", "safetensors", "gguf", "llama_cpp_python"):
        assert summary["environment"][key]


def test_notify_falls_back_to_the_bell(demo_run):
    _, done = demo_run
    if shutil.which("notify-send"):
        pytest.skip("notify-send is installed here, so the desktop notification is used instead of the bell")
    assert "\a" in done.stderr


def test_refuses_a_foreign_non_empty_output_dir(source_checkpoint, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    assert main(["pipeline", "--input-model", str(source_checkpoint), "--output-dir", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["pipeline", "--input-model", str(source_checkpoint), "--output-dir", str(out), "--quiet",
                 "--overwrite"]) == 2
    assert "not a previous pipeline output" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "precious"


def test_overwrite_replaces_a_previous_output(demo_run, embedded_checkpoint, tmp_path):
    """What ``--overwrite`` removes and keeps is the pipeline's own logic: the embedded model on any gate."""
    out = tmp_path / "again"
    shutil.copytree(demo_run[0], out, copy_function=os.link)  # hard links: no disk cost
    code = main(["pipeline", "--input-model", str(embedded_checkpoint), "--output-dir", str(out), "--quiet",
                 "--quantization", "Q8_0", "--no-validate", "--overwrite", "--model-name", "m"])
    assert code == 0
    assert sorted(p.name for p in (out / "gguf").iterdir()) == [
        "Modelfile", "README.md", "SHA256SUMS", "m-Q8_0.gguf", "m-Q8_0.so8t.gguf", "mmproj-m-f16.gguf"
    ]


def test_disk_estimate_by_hand():
    # 1e9 bytes of source, 1e8 parameters: F16 2e8 + Q4_K_M 4.9/8e8 (no intermediate file), then x1.2.
    need = environment.estimate_disk_need(10**9, 10**8, ["F16", "Q4_K_M"])
    assert need == int((10**9 + 2 * 10**8 + 0.6125 * 10**8) * 1.2)


def test_too_little_disk_is_refused_before_any_work(source_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(environment.shutil, "disk_usage", lambda path: DiskUsage(10**6, 0, 10**6))
    out = tmp_path / "out"
    assert main(["pipeline", "--input-model", str(source_checkpoint), "--output-dir", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "GB free but the pipeline needs" in err
    assert not out.exists()


def test_require_names_every_problem(tmp_path):
    env = environment.Environment("3.11", {}, 0, 1, ["gguf is not installed", "disk"])
    with pytest.raises(So8tError, match="gguf is not installed; disk"):
        environment.require(env)



def test_demo_trains_the_head_and_prints_its_eval_metrics(demo_run):
    """``--demo`` trains on the shipped demo set (so8t train) and shows the head's eval metrics; the sidecar
    says the head was trained, so no untrained verdict is ever shown."""
    from so8t.gguf.sidecar_reader import read_sidecar

    out, done = demo_run
    assert "train" in done.stdout and "trained safety head, eval metrics:" in done.stdout
    assert "REFUSE recall" in done.stdout and "majority-class baseline" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    safety = summary["training"]["safety"]
    assert safety["accuracy"] > safety["majority_baseline"]
    assert read_sidecar(out / "gguf" / "so8t-demo-F16.so8t.gguf").head_trained


def test_a_validated_run_asks_the_image_prompt_once(embedded_checkpoint, tmp_path):
    """The pipeline asks the image prompt once, with its smallest file (the least memory), in the first
    file's validation; the later reports name that file instead of running llama.cpp with the mmproj again.
    The order of work is the pipeline's, whatever the model: on ``--so8t-model`` too this runs on the embedded
    model (a whole pipeline of the user's checkpoint took 101 s at Qwen2-VL-2B size for it; the image prompt on
    that checkpoint's own files is checked by suites/test_validator.py and suites/test_multimodal_smoke.py)."""
    out = tmp_path / "two"
    assert main(["pipeline", "--input-model", str(embedded_checkpoint), "--output-dir", str(out), "--quiet",
                 "--quantization", "F16,Q8_0", "--model-name", "m"]) == 0
    gguf = out / "gguf"
    assert (gguf / "m-Q8_0.gguf").stat().st_size < (gguf / "m-F16.gguf").stat().st_size
    reports = {q: json.loads((out / "reports" / f"validate-{q}.json").read_text()) for q in ("F16", "Q8_0")}
    image = {q: next(c for c in r["checks"] if c["name"] == "runtime.mmproj_image") for q, r in reports.items()}
    assert image["F16"]["status"] == "PASS" and "not repeated" not in image["F16"]["reason"]
    assert "m-Q8_0.gguf (the same model at another type)" in image["F16"]["reason"]
    assert image["Q8_0"]["status"] == "PASS" and "m-Q8_0.gguf; not repeated" in image["Q8_0"]["reason"]


# --- the bundle (so8t/bundle/): Modelfile, README.md model card, SHA256SUMS in the demo's gguf/ -------------

#: a conversation with a system turn, and one without (the template then adds the default system turn)
CONVERSATIONS = (
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is SO(8)?"},
     {"role": "assistant", "content": "The rotations of 8-dim space."}, {"role": "user", "content": "東京は? 🙂"}],
    [{"role": "user", "content": "Hello there"}],
)


def _modelfile(path):
    """(FROM args, TEMPLATE text, stop params) of an Ollama Modelfile, by its documented syntax."""
    import re

    text = path.read_text()
    template = re.search(r'^TEMPLATE """(.*?)"""', text, re.MULTILINE | re.DOTALL)
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    froms = [line.split(None, 1)[1] for line in lines if line.upper().startswith("FROM ")]
    stops = [json.loads(line.split(None, 2)[2]) for line in lines if line.upper().startswith("PARAMETER STOP ")]
    return froms, template.group(1) if template else None, stops


def test_demo_modelfile_points_at_its_files_and_renders_the_chat_template(demo_run):
    """FROM lines name files of the directory (one text file, the mmproj); the Go TEMPLATE renders each
    conversation exactly as transformers renders the checkpoint's own chat template; stops hold the
    tokenizer's EOS tokens."""
    from transformers import AutoTokenizer, GenerationConfig

    from suites.go_template import render

    out, _ = demo_run
    gguf = out / "gguf"
    froms, template, stops = _modelfile(gguf / "Modelfile")
    assert all((gguf / f).resolve().is_file() and (gguf / f).resolve().parent == gguf.resolve() for f in froms)
    assert sorted(f.split("/")[-1] for f in froms) == ["mmproj-so8t-demo-f16.gguf", "so8t-demo-Q4_K_M.gguf"]
    tokenizer = AutoTokenizer.from_pretrained(str(out / "so8t-demo-so8t"))
    for messages in CONVERSATIONS:
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        got = render(template, {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]})
        assert got == expected
    eos = GenerationConfig.from_pretrained(str(out / "so8t-demo-so8t")).eos_token_id
    assert set(tokenizer.convert_ids_to_tokens(eos if isinstance(eos, list) else [eos])) <= set(stops)
    assert tokenizer.eos_token in stops


def _card_rows(card: str) -> dict[str, list[str]]:
    rows = [line for line in card.splitlines() if line.startswith("| `")]
    return {cells[0].strip("`"): cells[1:] for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}


def test_demo_card_agrees_with_the_reports(demo_run):
    """Every file of gguf/ but the bundle is a row with its size on disk; each text file's verdict and KL are
    its report's; the guard's eval accuracy is the one the train step recorded."""
    out, _ = demo_run
    gguf = out / "gguf"
    card = (gguf / "README.md").read_text()
    rows = _card_rows(card)
    on_disk = {p.name for p in gguf.iterdir()} - {"Modelfile", "README.md", "SHA256SUMS"}
    assert set(rows) == on_disk
    for name, (kind, size, verdict, kl) in rows.items():
        assert int(size) == (gguf / name).stat().st_size, name
    for quant in DEMO_TYPES:
        report = json.loads((out / "reports" / f"validate-{quant}.json").read_text())
        parity = next(c for c in report["checks"] if c["name"] == "parity.logits")
        kind, _, verdict, kl = rows[f"so8t-demo-{quant}.gguf"]
        assert kind == f"text {quant}" and verdict == report["overall"] == "PASS"
        assert float(kl) == pytest.approx(parity["details"]["ours"]["mean_kl"], rel=1e-4)
    assert rows["mmproj-so8t-demo-f16.gguf"][2] == "PASS"
    assert {rows[f"so8t-demo-{q}.so8t.gguf"][2] for q in DEMO_TYPES} == {"PASS"}
    accuracy = json.loads((out / "summary.json").read_text())["training"]["safety"]["accuracy"]
    assert f"safety accuracy {100 * accuracy:.1f}%" in card
    for command in ("llama-mtmd-cli -m so8t-demo-Q4_K_M.gguf --mmproj mmproj-so8t-demo-f16.gguf",
                    "llama-server -m so8t-demo-Q4_K_M.gguf --mmproj mmproj-so8t-demo-f16.gguf",
                    "so8t serve --model so8t-demo-Q4_K_M.gguf --mmproj mmproj-so8t-demo-f16.gguf"):
        assert command in card


def test_demo_sha256sums_verify(demo_run):
    """SHA256SUMS names every file of gguf/ but itself, each with the sha256 of its bytes (hashlib here;
    also ``sha256sum -c`` where coreutils is installed)."""
    import hashlib

    gguf = demo_run[0] / "gguf"
    lines = (gguf / "SHA256SUMS").read_text().splitlines()
    listed = {}
    for line in lines:
        digest, name = line.split("  ", 1)
        listed[name] = digest
    assert set(listed) == {p.name for p in gguf.iterdir()} - {"SHA256SUMS"}
    for name, digest in listed.items():
        assert hashlib.sha256((gguf / name).read_bytes()).hexdigest() == digest, name
    if shutil.which("sha256sum"):
        done = subprocess.run(["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=gguf, capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
