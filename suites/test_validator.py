"""The validator (``so8t.validation``, ``so8t validate``): a good export passes every check; each kind of
damage fails the check that owns it, with a reason naming the problem, and never raises.

Files: the embedded default model converted with random gates + safety head and exported by the real
exporter (module fixture: one F16 text file, sidecar, mmproj), and a tiny text GGUF written by the real
text writer (``so8t.gguf.text.write_text_ggufs``) with a 257-token byte-level vocabulary, cheap enough to
damage in many ways. Damaged copies are made by rewriting with gguf-py (missing/extra tensors, wrong
types, wrong keys), by editing bytes in place, or by editing a sidecar's tensors through
``GGUFReader(mode="r+")``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, TokenType

from so8t.gguf import metadata, names, quant
from so8t.gguf.text import TextHParams, write_text_ggufs
from so8t.gguf.tokenizer import TokenizerMeta
from so8t.validation import CHECKS, REPORT_SCHEMA, SO8TGGUFValidator, checks_for
from so8t.validation.checks_tokenizer import byte_level_symbols

# ------------------------------------------------------------------------------- tiny text GGUF

TINY_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
TINY_SPECIAL = "<|endoftext|>"
TINY_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def tiny_tokenizer() -> TokenizerMeta:
    """Byte-level BPE: the 256 byte symbols, one token per merge, one CONTROL token (bos = eos = pad)."""
    tokens = byte_level_symbols() + ["".join(m.split(" ")) for m in TINY_MERGES] + [TINY_SPECIAL]
    types = [int(TokenType.NORMAL)] * (len(tokens) - 1) + [int(TokenType.CONTROL)]
    special = len(tokens) - 1
    return TokenizerMeta(tokens, types, list(TINY_MERGES), special, special, special, False, TINY_TEMPLATE)


def tiny_hparams() -> TextHParams:
    return TextHParams(vocab_size=len(tiny_tokenizer().tokens), hidden_size=64, intermediate_size=128, n_layers=1,
                       n_heads=2, n_kv_heads=1, context_length=4096, rms_norm_eps=1e-6, rope_theta=1e6,
                       mrope_section=(4, 6, 6, 0), tied=True)


def write_tiny_gguf(path: Path, quant_type: str = "F16", seed: int = 0) -> Path:
    """A valid small qwen2vl text GGUF through the exporter's writer (content hash included)."""
    hp = tiny_hparams()
    gen = torch.Generator().manual_seed(seed)

    def stream():
        for t in names.text_inventory(hp.dims, hp.n_layers, hp.tied):
            if t.is_matrix:
                yield t.hf_name, torch.randn(t.shape, generator=gen) * 0.05
            else:
                yield t.hf_name, 1.0 + 0.1 * torch.randn(t.shape, generator=gen)

    from so8t.adapters.qwen2vl import FOLD_SITES

    config = {"so8t": {"gate_sites": {s.name: list(s.gates) for s in FOLD_SITES}, "map": "exp"}}
    write_text_ggufs(stream(), hp, tiny_tokenizer(), {quant_type: (quant.QUANT_TYPES[quant_type], path)},
                     metadata.so8t_keys(config), "tiny-validator-test", progress=False)
    return path


def rewrite_gguf(src: Path, dst: Path, *, drop_tensors=(), add_tensors=None, retype=None, set_kv=None,
                 drop_kv=(), rehash: bool = True) -> Path:
    """Copy ``src`` to ``dst`` through gguf-py with changes; ``rehash`` re-seals ``so8t.content_hash``
    (so only the intended damage is left to find)."""
    reader = GGUFReader(src)
    set_kv = dict(set_kv or {})
    writer = GGUFWriter(dst, str(set_kv.pop("general.architecture", (None,))[0] or
                                 reader.fields["general.architecture"].contents()))
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in drop_kv or key in set_kv:
            continue
        vtype = GGUFValueType(fld.types[0])
        sub = GGUFValueType(fld.types[-1]) if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, fld.contents(), vtype, sub_type=sub)
    for key, (value, vtype, sub) in set_kv.items():
        writer.add_key_value(key, value, vtype, sub_type=sub)
    for t in reader.tensors:
        if t.name in drop_tensors:
            continue
        data = np.array(t.data)
        if retype and t.name in retype:
            data = quant.encode(quant.decode(data, t.tensor_type).astype(np.float64), retype[t.name])
            writer.add_tensor(t.name, data, raw_dtype=retype[t.name])
        else:
            writer.add_tensor(t.name, data, raw_dtype=t.tensor_type)
    for name, data in (add_tensors or {}).items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if rehash:
        metadata.patch_content_hash(dst, metadata.content_hash_of_file(dst))
    return dst


def failed(report) -> dict[str, str]:
    return {c.name: c.reason for c in report.checks if c.status == "FAIL"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny-F16.gguf")


@pytest.fixture
def copy_of(tiny, tmp_path):
    def make(name: str = "damaged.gguf") -> Path:
        return Path(shutil.copyfile(tiny, tmp_path / name))

    return make


def run(path: Path, **kwargs):
    report = SO8TGGUFValidator(path, **kwargs).run()
    jsonschema.validate(report.to_dict(), REPORT_SCHEMA)
    return report


def assert_fails(report, check: str, *words: str) -> str:
    """``check`` FAILed, naming ``words``; the overall verdict is FAIL; llama.cpp was never reached."""
    assert report.overall == "FAIL"
    reasons = failed(report)
    assert check in reasons, f"{check} did not fail; failures: {reasons}"
    for word in words:
        assert word.lower() in reasons[check].lower(), reasons[check]
    if any(c.name == "runtime.llama_load" for c in report.checks):
        assert report.get("runtime.llama_load").status == "SKIP"
    assert report.by_status("ERROR") == []
    return reasons[check]


# --------------------------------------------------------------------------------- good files


def test_tiny_file_passes_structure_and_runs_in_llama_cpp(tiny):
    """Every check that runs passes, but without a checkpoint parity cannot run: UNVERIFIED, never PASS."""
    report = run(tiny)
    assert report.overall == "UNVERIFIED", report.table(verbose=True)
    assert report.by_status("FAIL") == [] and report.by_status("ERROR") == []
    assert "logit parity against PyTorch did not run" in report.table()
    assert report.get("runtime.llama_load").status == "PASS"
    skipped = {c.name: c.reason for c in report.by_status("SKIP")}
    # without a sidecar and a checkpoint exactly these are skipped, each saying why
    assert set(skipped) == {"file.sidecar_readable", "file.mmproj_readable", "metadata.mmproj", "tensors.mmproj",
                            "metadata.sidecar_consistency", "metadata.checkpoint_consistency",
                            "tensors.values_vs_source", "group.rotations_in_so8", "group.rotations_match_generators",
                            "group.sidecar_matches_checkpoint", "group.safety_head_finite", "runtime.mmproj_image",
                            "parity.logits"}
    assert all(reason for reason in skipped.values())
    assert [c.name for c in report.checks] == [c.name for c in CHECKS]


@pytest.mark.llama
def test_embedded_export_passes_every_check(gguf_text, mmproj_f16, so8t_random_dir):
    f16 = gguf_text["F16"]
    report = run(f16.path, so8t_model=so8t_random_dir, sidecar=f16.sidecar, mmproj=mmproj_f16)
    assert report.overall == "PASS", report.table(verbose=True)
    assert report.by_status("SKIP") == [], report.table(verbose=True)
    assert report.get("tensors.values_vs_source").measured <= 1.0
    assert report.get("tensors.content_hash").measured == f16.content_hash
    parity = report.get("parity.logits")  # the eps llama.cpp 0.3.36 runs with is found and named
    assert parity.details["eps"] == 0.0 and "ignores the file's rms eps" in parity.reason
    assert parity.details["ours"]["n"] >= 128
    data = json.loads(report.to_json())
    assert data["overall"] == "PASS" and data["summary"]["PASS"] == len(CHECKS)
    assert data["files"]["gguf_model"]["size_bytes"] == f16.path.stat().st_size


def test_a_run_asks_the_image_prompt_once(gguf_text, mmproj_f16, so8t_random_dir):
    """A second file of the same run names the file the image prompt was answered with, without a child."""
    from so8t.validation import checks_runtime
    from so8t.validation.context import Context

    ctx = Context(gguf_text["Q8_0"].path, so8t_random_dir, mmproj_path=mmproj_f16,
                  image_checked_with=gguf_text["F16"].path)
    outcome = checks_runtime.mmproj_image.func(ctx)
    assert outcome.status == "PASS" and gguf_text["F16"].path.name in outcome.reason
    assert "not repeated" in outcome.reason


def test_the_image_prompt_can_pair_the_mmproj_with_a_sibling_file(gguf_text, mmproj_f16, so8t_random_dir,
                                                                  monkeypatch):
    """``image_text_file`` (the pipeline's smallest file) is what the image child loads, and the report says so."""
    from so8t.validation import checks_runtime
    from so8t.validation.context import Context

    asked = []
    real = checks_runtime._run_probe
    monkeypatch.setattr(checks_runtime, "_run_probe", lambda args, *rest: asked.append(args) or real(args, *rest))
    ctx = Context(gguf_text["F16"].path, so8t_random_dir, mmproj_path=mmproj_f16,
                  image_text_file=gguf_text["Q8_0"].path)
    outcome = checks_runtime.mmproj_image.func(ctx)
    assert asked == [["image", str(gguf_text["Q8_0"].path), str(mmproj_f16)]]
    assert outcome.status == "PASS", outcome.reason
    assert f"{gguf_text['Q8_0'].path.name} (the same model at another type)" in outcome.reason


# ------------------------------------------------------------------------------ damaged files


@pytest.mark.parametrize("keep", [0, 10, 200, 5000, -1], ids=["empty", "magic", "in-kv", "in-tokens", "last-byte"])
def test_truncated_file_fails_never_raises(copy_of, keep):
    path = copy_of()
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep >= 0 else len(data) + keep])
    report = run(path)
    reasons = failed(report)
    assert {"file.exists", "file.readable", "file.layout"} & set(reasons), reasons
    assert report.overall == "FAIL" and report.get("runtime.llama_load").status == "SKIP"


def test_flipped_byte_in_tensor_data_breaks_the_content_hash(copy_of):
    path = copy_of()
    tensor = next(t for t in GGUFReader(path).tensors if t.name == "blk.0.ffn_down.weight")
    at = int(tensor.data_offset) + int(tensor.n_bytes) // 2
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01  # lowest mantissa bit of one F16 weight: the values stay plausible
    path.write_bytes(bytes(data))
    assert_fails(run(path), "tensors.content_hash", "tensor data changed")


def test_wrong_architecture(tiny, tmp_path):
    path = rewrite_gguf(tiny, tmp_path / "arch.gguf", set_kv={"general.architecture": ("SO8T", GGUFValueType.STRING, None)})
    assert_fails(run(path), "metadata.architecture", "'SO8T'", "qwen2vl")


def test_missing_tensor(tiny, tmp_path):
    path = rewrite_gguf(tiny, tmp_path / "missing.gguf", drop_tensors=("blk.0.ffn_up.weight",))
    assert_fails(run(path), "tensors.inventory", "missing", "blk.0.ffn_up.weight")


def test_extra_tensor(tiny, tmp_path):
    extra = {"layers.0.attn_rot.rotation": np.eye(8, dtype=np.float32)}
    path = rewrite_gguf(tiny, tmp_path / "extra.gguf", add_tensors=extra)
    assert_fails(run(path), "tensors.inventory", "extra", "layers.0.attn_rot.rotation")


def test_norm_stored_as_f16(tiny, tmp_path):
    path = rewrite_gguf(tiny, tmp_path / "norm16.gguf", retype={"blk.0.attn_norm.weight": GGMLQuantizationType.F16})
    assert_fails(run(path), "tensors.types", "blk.0.attn_norm.weight", "F32")


def test_nan_weight_found_even_with_a_resealed_hash(tiny, tmp_path):
    path = rewrite_gguf(tiny, tmp_path / "nan.gguf")
    reader = GGUFReader(path, "r+")
    next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight").data[3, 5] = np.nan
    reader.data.flush()
    del reader
    metadata.patch_content_hash(path, metadata.content_hash_of_file(path))
    report = run(path)
    assert report.get("tensors.content_hash").status == "PASS"
    assert_fails(report, "tensors.finite", "NaN/Inf", "blk.0.attn_q.weight")


_U32, _STR, _ARR = GGUFValueType.UINT32, GGUFValueType.STRING, GGUFValueType.ARRAY
#: key edits and the check that must catch each, with a word its reason must contain
KV_DAMAGE = {
    "ctx-as-uint64": ({"qwen2vl.context_length": (4096, GGUFValueType.UINT64, None)}, (), "metadata.hparams", "UINT64"),
    "no-head-count": ({}, ("qwen2vl.attention.head_count",), "metadata.hparams", "missing"),
    "rope-3-sections": ({"qwen2vl.rope.dimension_sections": ([4, 6, 6], _ARR, GGUFValueType.INT32)}, (),
                        "metadata.rope_sections", "exactly 4"),
    "rope-wrong-sum": ({"qwen2vl.rope.dimension_sections": ([4, 6, 7, 0], _ARR, GGUFValueType.INT32)}, (),
                       "metadata.rope_sections", "head_dim/2"),
    "unknown-pre": ({"tokenizer.ggml.pre": ("llama-bpe", _STR, None)}, (), "metadata.tokenizer", "qwen2"),
    "no-merges": ({}, ("tokenizer.ggml.merges",), "metadata.tokenizer", "merges"),
    "no-template": ({}, ("tokenizer.chat_template",), "metadata.tokenizer", "chat_template"),
    "merge-of-unknown": ({"tokenizer.ggml.merges": (TINY_MERGES + ["Ġ q"], _ARR, _STR)}, (), "metadata.vocabulary",
                         "'Ġq'"),
    "eos-out-of-range": ({"tokenizer.ggml.eos_token_id": (100000, _U32, None)}, (), "metadata.vocabulary", "outside"),
    "rotation-dim-16": ({"so8t.rotation_dim": (16, _U32, None)}, (), "metadata.so8t_keys", "8"),
    "hash-placeholder": ({"so8t.content_hash": (metadata.PLACEHOLDER, _STR, None)}, (), "metadata.so8t_keys",
                         "placeholder"),
    "ftype-says-q8_0": ({"general.file_type": (7, _U32, None)}, (), "metadata.file_type", "MOSTLY_Q8_0"),
    "hidden-mismatch": ({"qwen2vl.embedding_length": (128, _U32, None)}, (), "tensors.shapes", "metadata implies"),
}


@pytest.mark.parametrize("case", list(KV_DAMAGE))
def test_damaged_metadata_fails_its_check(tiny, tmp_path, case):
    set_kv, drop_kv, check, word = KV_DAMAGE[case]
    path = rewrite_gguf(tiny, tmp_path / f"{case}.gguf", set_kv=set_kv, drop_kv=drop_kv, rehash=case != "hash-placeholder")
    assert_fails(run(path), check, word)


def test_not_a_gguf_and_missing_file(tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("this is not a model, just some notes that are long enough")
    assert_fails(run(text), "file.readable", "not a GGUF")
    assert_fails(run(tmp_path / "absent.gguf"), "file.exists", "no such file")


def test_llama_cpp_refusal_is_a_fail_not_a_crash(tiny, tmp_path):
    """The runtime stage alone (its guard removed) on a file llama.cpp refuses: a FAIL with llama.cpp's
    reason, from the child process; the validator process lives on."""
    import dataclasses

    from so8t.validation import checks_runtime
    from so8t.validation.context import Context, run_check

    path = rewrite_gguf(tiny, tmp_path / "unknown-arch.gguf",
                        set_kv={"general.architecture": ("so8t-unknown", GGUFValueType.STRING, None)})
    unguarded = dataclasses.replace(checks_runtime.llama_load, requires=())
    ctx = Context(path)
    ctx.reader = GGUFReader(tiny)  # llama_load reads the vocabulary size from the parsed file
    result = run_check(ctx, unguarded)
    assert result.status == "FAIL", result
    assert "llama.cpp" in result.reason and "exit" in result.reason


# ------------------------------------------------------------------------------ the sidecar


def _patched_sidecar(src: Path, dst: Path, edit) -> Path:
    shutil.copyfile(src, dst)
    reader = GGUFReader(dst, "r+")
    tensor = next(t for t in reader.tensors if t.name == "layers.1.attn_safe.rotation")
    edit(tensor.data)
    reader.data.flush()
    return dst


def _flip_column(r):
    r[0, :, 0] *= -1  # orthogonal, det -1: a reflection


def _transpose(r):
    r[0] = r[0].T.copy()  # R^-1: still in SO(8), no longer exp(A(generators))


def _nudge(r):
    r[2, 3, 4] += 1e-9  # far above the float64 oracle tolerance (1.8e-14)


@pytest.mark.parametrize(
    "edit, check, words, in_so8",
    [(_flip_column, "group.rotations_in_so8", ("reflection",), False),
     (_transpose, "group.rotations_match_generators", ("layer 1 gate attn_safe",), True),
     (_nudge, "group.rotations_in_so8", ("not orthogonal",), False)],
    ids=["det-minus-one", "inverse-stored", "not-orthogonal"],
)
def test_sidecar_group_laws(gguf_text, tiny, tmp_path, edit, check, words, in_so8):
    """Group checks judge the sidecar on its own (paired here with the cheap tiny text file, so the
    content-hash link fails too, as it must)."""
    sidecar = _patched_sidecar(gguf_text["F16"].sidecar, tmp_path / "side.so8t.gguf", edit)
    report = run(tiny, sidecar=sidecar)
    assert_fails(report, check, *words)
    assert (report.get("group.rotations_in_so8").status == "PASS") is in_so8
    assert set(failed(report)) <= {"group.rotations_in_so8", "group.rotations_match_generators",
                                   "metadata.sidecar_consistency"}


def test_mmproj_of_another_width(mmproj_f16, source_reader, tiny):
    """The checkpoint's mmproj projects to its text width, the tiny text model is 64 wide: llama.cpp would
    refuse the pair."""
    width = int(source_reader.text_config.hidden_size)
    assert width != 64
    assert_fails(run(tiny, mmproj=mmproj_f16), "metadata.mmproj", f"projection_dim {width}")


def test_sidecar_of_another_text_file(gguf_text, tiny):
    report = run(tiny, sidecar=gguf_text["F16"].sidecar)
    assert_fails(report, "metadata.sidecar_consistency", "another text file")
    assert report.get("group.rotations_in_so8").status == "PASS"


# ---------------------------------------------------------------------------- values vs source


def test_wrong_side_fold_is_caught(so8t_random_dir, tmp_path):
    """Folding o_proj as ``W @ R`` (the upstream SO8T bug) instead of ``R.T @ W``: every structural check
    passes, the comparison with the freshly folded checkpoint fails on attn_output."""
    from so8t import group
    from so8t.adapters import qwen2vl
    from so8t.checkpoint.so8t_dir import SO8TCheckpoint
    from so8t.fold import iter_folded_tensors
    from so8t.gguf.tokenizer import read_tokenizer

    ckpt = SO8TCheckpoint(so8t_random_dir)
    hp = TextHParams.from_config(ckpt.reader.config)

    def wrong_side():
        for name, tensor in iter_folded_tensors(ckpt, part="text"):
            site = qwen2vl.fold_site(name)
            if site is not None and site[0].name == "attention_output" and site[2] == "weight":
                r = group.block_diag(ckpt.site_rotation(site[1], site[0])).double()
                tensor = ckpt.reader.get(name).double() @ r
            yield name, tensor

    # Q8_0: the wrong side moves attn_output by the rotation's size, far past one 8-bit block's rounding, in
    # half the disk of F16 (1.6 GB at Qwen2-VL-2B size, beside the session's files)
    path = tmp_path / "wrong-side-Q8_0.gguf"
    write_text_ggufs(wrong_side(), hp, read_tokenizer(so8t_random_dir, hp.vocab_size),
                     {"Q8_0": (quant.QUANT_TYPES["Q8_0"], path)}, metadata.so8t_keys(ckpt.reader.config), "wrong",
                     progress=False)
    subset = tuple(c for c in CHECKS if c.category in ("file", "tensors") or c.name in
                   ("metadata.architecture", "metadata.hparams", "metadata.so8t_keys"))
    report = SO8TGGUFValidator(path, so8t_model=so8t_random_dir, checks=subset).run()
    reason = assert_fails(report, "tensors.values_vs_source", "attn_output")
    assert set(failed(report)) == {"tensors.values_vs_source"}, reason


# ------------------------------------------------------------------------------------- the CLI


def _cli(argv: list[str]) -> int:
    from so8t.cli import main

    return main(["validate", *argv])


def test_cli_exit_codes_and_report(tiny, copy_of, tmp_path, capsys):
    good = tmp_path / "good.json"
    assert _cli(["--gguf-model", str(tiny), "--output-report", str(good)]) == 3  # UNVERIFIED: no checkpoint
    captured = capsys.readouterr()
    assert "overall UNVERIFIED" in captured.out and "runtime.llama_load" in captured.out
    assert "parity against PyTorch did not run" in captured.err and "--so8t-model" in captured.err
    data = json.loads(good.read_text())
    assert data["overall"] == "UNVERIFIED"
    jsonschema.validate(data, REPORT_SCHEMA)

    damaged = copy_of()
    damaged.write_bytes(damaged.read_bytes()[:-100])
    bad = tmp_path / "bad.json"
    assert _cli(["--gguf-model", str(damaged), "--output-report", str(bad), "--no-runtime"]) == 1
    assert "overall FAIL" in capsys.readouterr().out
    assert json.loads(bad.read_text())["overall"] == "FAIL"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "damaged.gguf", "good.json"]  # no temp left


def test_cli_usage_errors_are_one_line_and_write_nothing(tiny, source_checkpoint, tmp_path, capsys):
    assert _cli(["--gguf-model", str(tiny), "--output-report", str(tmp_path / "nope" / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "report directory does not exist" in err[0] and "nope" in err[0]
    assert not (tmp_path / "nope").exists()
    report = tmp_path / "r.json"
    assert _cli(["--gguf-model", str(tiny), "--so8t-model", str(source_checkpoint), "--output-report", str(report)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an SO8T checkpoint" in err[0]
    assert not report.exists()


@pytest.mark.llama
def test_checks_for_is_the_closure_of_the_named_checks_in_run_order():
    """Every named requirement of a chosen check is chosen, nothing else is, and the run order is kept."""
    chosen = checks_for("parity.logits")
    names = [c.name for c in chosen]
    assert names == [c.name for c in CHECKS if c.name in names]
    assert {"file.exists", "tensors.finite", "runtime.llama_load", "parity.logits"} <= set(names)
    assert not {"tensors.values_vs_source", "tensors.content_hash", "runtime.mmproj_image"} & set(names)
    for c in chosen:
        assert {r for r in c.requires if not r.startswith("category:")} <= set(names), c.name
    assert [c.name for c in checks_for("file.exists")] == ["file.exists"]
    with pytest.raises(KeyError, match="no such check: parity.logit"):
        checks_for("parity.logit")


def test_block_type_parity_against_the_plain_baseline(so8t_identity_dir, plain_block_files, parity_verdicts):
    """Identity gates: the file is its own baseline (said, no second file). Random gates: the baseline
    file is built and scored, both sides and the ratio are in the report's details. The verdict runs with
    the checks it needs (``checks_for``): the others judge the file, and run on the same files elsewhere.
    The random-gate Q4_0 verdict is the session's (``parity_verdicts``): suites/test_must_fail.py asserts
    that it passes."""
    subset = checks_for("parity.logits")
    same = SO8TGGUFValidator(plain_block_files["Q8_0"], so8t_model=so8t_identity_dir, checks=subset).run()
    parity = same.get("parity.logits")
    assert parity.status == "PASS" and "its own baseline" in parity.reason, same.table(verbose=True)
    assert parity.details["baseline"] == parity.details["ours"] and parity.details["kl_ratio"] == 1.0
    rotated = parity_verdicts["Q4_0"]
    assert rotated.status in ("PASS", "FAIL") and "baseline: llama.cpp's Q4_0" in rotated.reason, rotated.reason
    ours, base = rotated.details["ours"], rotated.details["baseline"]
    assert ours["n"] == base["n"] >= 128 and rotated.details["kl_ratio"] == ours["mean_kl"] / base["mean_kl"]
    assert rotated.details["eps"] == 0.0


def test_one_q8_0_block_scale_times_four_is_caught(gguf_text, so8t_random_dir, tmp_path):
    """One Q8_0 block's f16 scale multiplied by 4 in place (content hash re-stamped, so only the values can
    tell): the file still loads and runs, the comparison with the folded checkpoint fails on that tensor."""
    src = gguf_text["Q8_0"].path
    path = Path(shutil.copyfile(src, tmp_path / src.name))
    target = next(t for t in metadata.read_gguf(path).tensors
                  if t.name.endswith("attn_output.weight") and t.ggml_type == GGMLQuantizationType.Q8_0)
    with open(path, "r+b") as handle:  # a Q8_0 block: f16 scale d, then 32 int8 quants
        handle.seek(target.offset)
        scale = np.frombuffer(handle.read(2), dtype=np.float16)
        handle.seek(target.offset)
        handle.write((scale * np.float16(4)).tobytes())
    metadata.patch_content_hash(path, metadata.content_hash_of_file(path))
    subset = tuple(c for c in CHECKS if c.category in ("file", "tensors") or c.name in
                   ("metadata.architecture", "metadata.hparams", "metadata.so8t_keys"))
    report = SO8TGGUFValidator(path, so8t_model=so8t_random_dir, checks=subset).run()
    reason = assert_fails(report, "tensors.values_vs_source", target.name)
    assert set(failed(report)) == {"tensors.values_vs_source"}, reason


def test_published_schema_matches_the_code_and_rejects_bad_reports(tiny):
    """report.schema.json (the one published schema) names exactly the statuses, categories and overall
    verdicts the code writes, and jsonschema rejects a report that breaks it."""
    from so8t.validation.report import CATEGORIES, OVERALL, STATUSES

    props = REPORT_SCHEMA["properties"]
    assert props["overall"]["enum"] == list(OVERALL)
    assert props["checks"]["items"]["properties"]["status"]["enum"] == list(STATUSES)
    assert props["checks"]["items"]["properties"]["category"]["enum"] == list(CATEGORIES)
    data = SO8TGGUFValidator(tiny, run_runtime=False).run().to_dict()
    jsonschema.validate(data, REPORT_SCHEMA)
    for broken in ({**data, "overall": "MAYBE"}, {k: v for k, v in data.items() if k != "checks"},
                   {**data, "checks": [{**data["checks"][0], "status": "OK"}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, REPORT_SCHEMA)
