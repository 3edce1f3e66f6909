"""The text GGUF holds what llama.cpp's qwen2vl loader requires, and the folded weights within the
rounding bound of each quant type's block format.

Expected values come from the source checkpoint's own files (config.json, tokenizer files) and from the
GGUF format (docs/reference.md section 3), never from the exporter's output. The round-trip tolerance is
``so8t.gguf.quant.error_bound`` (derived from each block format, shared with the validator).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType, TokenType
from gguf.quants import dequantize

from so8t.gguf import metadata
from so8t.gguf.quant import error_bound
from suites.fixtures.gguf_files import ALL_TYPES, LIGHT_TYPES, per_type, running_types

BLOCK_SUFFIXES = {  # hub suffix -> gguf suffix (docs/reference.md section 3), written out here independently
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
UNIFORM_2D_TYPE = {"F32": T.F32, "F16": T.F16, "BF16": T.BF16, "Q8_0": T.Q8_0}
#: llama.cpp's Q4_0 (docs/reference.md section 4): the output matrix (the embedding, when tied) stays at Q6_K
Q4_0_OUTPUT_TYPE = T.Q6_K
K_TYPES = {T.Q4_K: 4, T.Q5_K: 5, T.Q6_K: 6}  # bits per weight of the K-quant grids
#: What llama.cpp's quantizer uses for a row length that fits no 256 block (llama-quant.cpp's fallback:
#: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; docs/reference.md section 4)
FALLBACK_32 = {T.Q5_0, T.Q5_1, T.Q8_0}


def _config(path: Path) -> dict:
    cfg = json.loads((path / "config.json").read_text())
    return {**cfg, **(cfg.get("text_config") or {})}


def _field(reader: GGUFReader, key: str):
    field = reader.get_field(key)
    assert field is not None, f"missing key {key}"
    return field


def _scalar(reader: GGUFReader, key: str):
    return _field(reader, key).contents()


def _hub_to_gguf(cfg: dict) -> dict[str, str]:
    table = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not cfg.get("tie_word_embeddings", True):
        table["lm_head.weight"] = "output.weight"
    for i in range(cfg["num_hidden_layers"]):
        for hub, gg in BLOCK_SUFFIXES.items():
            table[f"model.layers.{i}.{hub}"] = f"blk.{i}.{gg}"
    return table


@pytest.fixture(scope="module")
def f16_reader(gguf_text) -> GGUFReader:
    """gguf-py's own reader: the format oracle (slow on a 151k vocabulary, so read once). Module scope, like
    ``tables``: the two hold 0.7 GB of parsed headers on the real-weights checkpoint, which a session
    fixture kept to the end of the gate."""
    return GGUFReader(gguf_text["F16"].path)


@pytest.fixture(scope="module")
def tables(gguf_text) -> dict:
    """Every file through ``so8t.gguf.metadata.read_gguf`` (checked against GGUFReader below)."""
    from so8t.gguf.metadata import read_gguf

    return {name: read_gguf(t.path) for name, t in gguf_text.items()}


def _data(path: Path, entry) -> np.ndarray:
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=entry.offset, shape=(entry.nbytes,))
    return np.asarray(raw).reshape(-1, entry.nbytes // int(np.prod(entry.dims[1:], dtype=np.int64)))


def test_fast_reader_agrees_with_gguf_reader(f16_reader, tables):
    table = tables["F16"]
    fields = {k: f for k, f in f16_reader.fields.items() if not k.startswith("GGUF.")}  # header pseudo-keys
    assert set(table.kv) == set(fields)
    for key, field in fields.items():
        assert table.kv[key] == field.contents(), key
        assert table.kv_types[key] == tuple(int(t) for t in field.types[:2]), key
    assert [(t.name, int(t.tensor_type), tuple(int(d) for d in t.shape)) for t in f16_reader.tensors] == [
        (t.name, t.ggml_type, t.dims) for t in table.tensors
    ]
    for mine, theirs in zip(table.tensors, f16_reader.tensors):
        assert mine.offset == theirs.data_offset and mine.nbytes == theirs.n_bytes, mine.name


def _is_output(name: str, names) -> bool:
    """The output matrix: ``output.weight``, or the embedding when the model is tied."""
    return name == "output.weight" or (name == "token_embd.weight" and "output.weight" not in names)


def _wants_256_block(quant: str, name: str, names) -> bool:
    """Does llama.cpp's mix ask for a 256-element K block for this 2-D tensor of a ``quant`` file (every
    matrix of a K-quant file, the output matrix of Q4_0 at Q6_K; docs/reference.md section 4)?"""
    return quant not in UNIFORM_2D_TYPE and (quant != "Q4_0" or _is_output(name, names))


def test_every_type_exported(gguf_text, tables, pytestconfig):
    """Every type written (this session's: all ten, or on a user's checkpoint without --so8t-heavy the
    light ones, suites/fixtures/gguf_files.py); a fallback is reported for exactly the matrices whose row
    length fits no block of the type llama.cpp's mix asks for (K blocks are 256 long), and for no other."""
    assert sorted(gguf_text) == sorted(running_types(pytestconfig, ALL_TYPES, LIGHT_TYPES))
    for quant, t in gguf_text.items():
        assert t.path.is_file() and t.path.stat().st_size == t.size
        names = {e.name for e in tables[quant].tensors}
        misfit = {
            e.name for e in tables[quant].tensors
            if len(e.dims) == 2 and _wants_256_block(quant, e.name, names) and e.dims[0] % 256
        }
        reported = {n for n in names if any(f"{n} " in f or f.endswith(n) for f in t.fallbacks)}
        assert reported == misfit, (quant, sorted(misfit ^ reported)[:4], t.fallbacks[:3])


@pytest.mark.parametrize("quant", per_type(ALL_TYPES, LIGHT_TYPES))
def test_llama_cpp_required_keys(tables, quant, source_checkpoint):
    kv, types = tables[quant].kv, tables[quant].kv_types
    cfg = _config(source_checkpoint)
    assert kv["general.architecture"] == "qwen2vl"
    expect_u32 = {
        "qwen2vl.context_length": cfg["max_position_embeddings"],
        "qwen2vl.embedding_length": cfg["hidden_size"],
        "qwen2vl.block_count": cfg["num_hidden_layers"],
        "qwen2vl.feed_forward_length": cfg["intermediate_size"],
        "qwen2vl.attention.head_count": cfg["num_attention_heads"],
        "qwen2vl.attention.head_count_kv": cfg["num_key_value_heads"],
    }
    for key, value in expect_u32.items():
        assert types[key] == (GGUFValueType.UINT32,), key
        assert kv[key] == value, key
    for key, value in {
        "qwen2vl.attention.layer_norm_rms_epsilon": cfg["rms_norm_eps"],
        "qwen2vl.rope.freq_base": cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"],
    }.items():
        assert types[key] == (GGUFValueType.FLOAT32,), key
        assert kv[key] == pytest.approx(value, rel=2**-23), key
    key = "qwen2vl.rope.dimension_sections"
    assert types[key] == (GGUFValueType.ARRAY, GGUFValueType.INT32)
    mrope = list((cfg.get("rope_scaling") or cfg.get("rope_parameters"))["mrope_section"])
    assert kv[key] == mrope + [0] * (4 - len(mrope))


def test_file_type_names_the_quant(tables):
    from gguf import LlamaFileType as F

    expect = {
        "F32": F.ALL_F32,
        "F16": F.MOSTLY_F16,
        "BF16": F.MOSTLY_BF16,
        "Q8_0": F.MOSTLY_Q8_0,
        "Q4_0": F.MOSTLY_Q4_0,
        "Q6_K": F.MOSTLY_Q6_K,
        "Q5_K_M": F.MOSTLY_Q5_K_M,
        "Q5_K_S": F.MOSTLY_Q5_K_S,
        "Q4_K_M": F.MOSTLY_Q4_K_M,
        "Q4_K_S": F.MOSTLY_Q4_K_S,
    }
    for quant, table in tables.items():
        assert table.kv["general.file_type"] == int(expect[quant]), quant


def _bpe_tables(ckpt: Path) -> tuple[dict[str, int], list[str]]:
    """The BPE vocabulary and merges, from the slow-tokenizer files when the checkpoint ships them, else from
    ``tokenizer.json`` (whose merges are "a b" strings or, in newer tokenizers, [a, b] pairs)."""
    if (ckpt / "vocab.json").is_file() and (ckpt / "merges.txt").is_file():
        vocab = json.loads((ckpt / "vocab.json").read_text())
        lines = (ckpt / "merges.txt").read_text().splitlines()
        return vocab, [m for m in lines if m and not m.startswith("#version")]
    model = json.loads((ckpt / "tokenizer.json").read_text())["model"]
    return model["vocab"], [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]


def _chat_template(ckpt: Path, tok_cfg: dict) -> str | None:
    """transformers' precedence: tokenizer_config.json, chat_template.jinja, chat_template.json."""
    if tok_cfg.get("chat_template"):
        return tok_cfg["chat_template"]
    if (ckpt / "chat_template.jinja").is_file():
        return (ckpt / "chat_template.jinja").read_text()
    if (ckpt / "chat_template.json").is_file():
        return json.loads((ckpt / "chat_template.json").read_text())["chat_template"]
    return None


def test_tokenizer_keys(f16_reader, tables, source_checkpoint):
    r = f16_reader
    cfg = _config(source_checkpoint)
    vocab, merges = _bpe_tables(source_checkpoint)
    tok_cfg = json.loads((source_checkpoint / "tokenizer_config.json").read_text())
    added = {int(k): v for k, v in tok_cfg["added_tokens_decoder"].items()}

    assert _scalar(r, "tokenizer.ggml.model") == "gpt2"
    assert _scalar(r, "tokenizer.ggml.pre") == "qwen2"
    tokens = _scalar(r, "tokenizer.ggml.tokens")
    types = _scalar(r, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == cfg["vocab_size"]
    for token, i in list(vocab.items())[:2000]:
        assert tokens[i] == token and types[i] == TokenType.NORMAL
    for i, entry in added.items():
        assert tokens[i] == entry["content"]
        assert types[i] == (TokenType.CONTROL if entry["special"] else TokenType.USER_DEFINED)
    used = set(vocab.values()) | set(added)
    unused = [i for i in range(cfg["vocab_size"]) if i not in used]  # the embedding's padding rows, if any
    assert all(tokens[i] == f"[PAD{i}]" and types[i] == TokenType.UNUSED for i in unused)
    assert _scalar(r, "tokenizer.ggml.merges") == merges
    ids = {v["content"]: k for k, v in added.items()}
    assert _scalar(r, "tokenizer.ggml.eos_token_id") == ids[tok_cfg["eos_token"]]
    assert _scalar(r, "tokenizer.ggml.padding_token_id") == ids[tok_cfg["pad_token"]]
    assert _scalar(r, "tokenizer.ggml.bos_token_id") == cfg["bos_token_id"]
    assert _scalar(r, "tokenizer.ggml.add_bos_token") is False
    template = _chat_template(source_checkpoint, tok_cfg)
    if template is None:
        assert r.get_field("tokenizer.chat_template") is None
    else:
        assert _scalar(r, "tokenizer.chat_template") == template
    # every other file (llama.cpp's quantizer copies the keys) holds the same tokenizer
    tok_keys = [k for k in tables["F16"].kv if k.startswith("tokenizer.")]
    for quant, table in tables.items():
        assert all(table.kv[k] == tables["F16"].kv[k] for k in tok_keys), quant


def test_so8t_keys_and_content_hash(tables, gguf_text, so8t_random_dir):
    section = json.loads((so8t_random_dir / "config.json").read_text())["so8t"]
    for quant, table in tables.items():
        kv = table.kv
        assert kv["so8t.rotation_dim"] == 8
        assert kv["so8t.group"] == "SO(8)"
        assert kv["so8t.map"] == section["map"]
        assert kv["so8t.folded"] is True
        assert kv["so8t.safety_classes"] == list(section["safety_classes"])
        assert kv["so8t.source_sha256"] == section["source"]["sha256"]
        # the documented hash, recomputed here from the file (so8t.gguf.metadata docstring)
        digest = hashlib.sha256()
        for t in table.tensors:
            digest.update(t.name.encode() + b"\0" + struct.pack("<I", t.ggml_type))
            digest.update(struct.pack("<Q", len(t.dims)) + b"".join(struct.pack("<Q", d) for d in t.dims))
            digest.update(hashlib.sha256(_data(gguf_text[quant].path, t).tobytes()).digest())
        assert kv["so8t.content_hash"] == digest.hexdigest() == gguf_text[quant].content_hash, quant


def test_sidecar_links_to_its_text_file(gguf_text):
    from so8t.gguf.sidecar_reader import read_sidecar

    for quant, t in gguf_text.items():
        assert read_sidecar(t.sidecar).text_content_hash == t.content_hash, quant


@pytest.mark.parametrize("quant", per_type(ALL_TYPES, LIGHT_TYPES))
def test_tensor_inventory(tables, quant, source_checkpoint):
    """Exactly the tensors llama.cpp expects (no output.weight when tied), shapes in GGUF order
    (ne0 = row length), norms and biases F32, matrices in the requested type (numpy types)."""
    tensors = tables[quant].tensors
    cfg = _config(source_checkpoint)
    hidden, ffn, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    head = hidden // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head
    shapes = {
        "token_embd.weight": [hidden, vocab],
        "output_norm.weight": [hidden],
        "output.weight": [hidden, vocab],
    }
    per_block = {
        "attn_norm.weight": [hidden],
        "attn_q.weight": [hidden, hidden],
        "attn_q.bias": [hidden],
        "attn_k.weight": [hidden, kv],
        "attn_k.bias": [kv],
        "attn_v.weight": [hidden, kv],
        "attn_v.bias": [kv],
        "attn_output.weight": [hidden, hidden],
        "ffn_norm.weight": [hidden],
        "ffn_gate.weight": [hidden, ffn],
        "ffn_up.weight": [hidden, ffn],
        "ffn_down.weight": [ffn, hidden],
    }
    expected = set(_hub_to_gguf(cfg).values())
    assert {t.name for t in tensors} == expected
    assert len(tensors) == len(expected)
    for t in tensors:
        suffix = t.name.split(".", 2)[-1] if t.name.startswith("blk.") else t.name
        want = per_block.get(suffix) or shapes[t.name]
        assert list(t.dims) == want, t.name
        output = _is_output(t.name, expected)
        if len(want) == 1:
            assert t.ggml_type == T.F32, t.name
        elif quant in UNIFORM_2D_TYPE:
            assert t.ggml_type == UNIFORM_2D_TYPE[quant], t.name
        elif _wants_256_block(quant, t.name, expected) and want[0] % 256:
            # llama.cpp's fallback for a row that fits no K block: a 32-block type (F16 if none fits)
            assert t.ggml_type in (FALLBACK_32 if want[0] % 32 == 0 else {T.F16}), (t.name, T(t.ggml_type).name)
        elif quant == "Q4_0":
            assert t.ggml_type == (Q4_0_OUTPUT_TYPE if output else T.Q4_0), t.name
        else:
            assert t.ggml_type in K_TYPES, f"{t.name}: {T(t.ggml_type).name} in a K-quant file"


#: Rows compared at a time: a multiple of 8 (whole fold blocks); the float64 arrays of one chunk of the
#: largest tensor (the embedding) stay near 100 MB at any vocabulary and width.
ROUND_TRIP_ROWS = 2048


@pytest.fixture(scope="module")
def round_trip_findings(tables, gguf_text, folded_text, source_checkpoint) -> dict:
    """quant -> the first tensor row whose dequantized value leaves the format's bound (a message), or None.

    One pass over the folded model for all types: each chunk of folded rows (float64, computed once) is
    compared with every file's dequantized rows. Folding per type repeated the same float64 pass ten times
    (26-39 s a type at Qwen2-VL-2B size)."""
    to_gguf = _hub_to_gguf(_config(source_checkpoint))
    by_name = {q: {t.name: t for t in tables[q].tensors} for q in gguf_text}
    findings: dict[str, str | None] = dict.fromkeys(gguf_text)
    for hub, gg in to_gguf.items():
        shape = folded_text.shape(hub)
        step = ROUND_TRIP_ROWS if len(shape) > 1 else shape[0]
        data = {q: _data(gguf_text[q].path, by_name[q][gg]) for q in gguf_text}
        for start in range(0, shape[0], step):
            w = folded_text.rows(hub, start, min(start + step, shape[0]))
            for quant in (q for q in gguf_text if findings[q] is None):
                qtype = T(by_name[quant][gg].ggml_type)
                got = dequantize(data[quant][start : start + len(w)] if len(shape) > 1 else data[quant], qtype)
                err = np.abs(got.astype(np.float64).reshape(w.shape) - w)
                bound = error_bound(qtype, w)
                if bound is None:
                    findings[quant] = f"{gg}: no format bound for {qtype.name} {w.shape}"
                elif not np.all(err <= bound):
                    worst = np.argmax(err - bound)
                    findings[quant] = (
                        f"{gg} ({qtype.name}) row {start + worst // w.shape[-1] if w.ndim > 1 else 0}: "
                        f"|err| {err.flat[worst]:.3e} > {bound.flat[worst]:.3e}"
                    )
    return findings


@pytest.mark.parametrize("quant", per_type(ALL_TYPES, LIGHT_TYPES))
def test_round_trip_within_block_format_bound(round_trip_findings, quant):
    """Every stored value, dequantized, lies within its format's error bound of the folded float64 weight."""
    assert round_trip_findings[quant] is None, round_trip_findings[quant]


def test_folded_weights_are_not_the_source_weights(tables, gguf_text, source_checkpoint):
    """Guard against exporting unfolded weights: with random gates the stored attn_output and ffn_down
    differ from the source weights by far more than F32 rounding (and equal the folded ones, above)."""
    from so8t.checkpoint import CheckpointReader

    reader = CheckpointReader(source_checkpoint)
    f32 = {t.name: t for t in tables["F32"].tensors}
    for hub in ("model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.down_proj.weight"):
        src = reader.get(hub).double().numpy()
        entry = f32[_hub_to_gguf(_config(source_checkpoint))[hub]]
        stored = _data(gguf_text["F32"].path, entry).view(np.float32).reshape(src.shape)
        assert np.abs(stored - src).max() > 1e3 * 2.0**-24 * np.abs(src).max()


# --- identity gates == llama.cpp's own converter ---------------------------------------------------

CONVERTER = os.environ.get("LLAMA_CPP_CONVERTER")


def _bits(data) -> np.ndarray:
    """A tensor's bytes, with -0.0 written as +0.0 in float tensors: the fold multiplies by the identity
    (``x @ I`` sums ``-0.0 * 1 + 0.0 * 0 = +0.0``), so a signed zero of the source (real checkpoints
    dequantized from block formats have them) comes out unsigned; the numbers are the same. Block formats
    are compared as raw bytes."""
    data = np.asarray(data)
    if np.issubdtype(data.dtype, np.floating):
        data = data + data.dtype.type(0)  # IEEE: -0.0 + 0.0 = +0.0, every other value unchanged
    return data.view(np.uint8)


@pytest.mark.converter
@pytest.mark.skipif(
    not CONVERTER,
    reason="LLAMA_CPP_CONVERTER is not set: point it at convert_hf_to_gguf.py (vendor/llama.cpp/ in the "
    "llama-cpp-python sdist) to compare with llama.cpp's own converter",
)
# q8_0 repeats the whole-model conversion (30 s on the 0.5 B real-weights model): heavy on a user's checkpoint
@pytest.mark.parametrize("outtype", per_type(["f16", "q8_0"], light=("f16",)))
def test_identity_gates_match_llama_cpp_converter(outtype, so8t_identity_dir, source_checkpoint, tmp_path):
    from so8t.gguf.export import SO8TToGGUFConverter

    theirs = tmp_path / f"theirs-{outtype}.gguf"
    run = subprocess.run(
        [sys.executable, CONVERTER, str(source_checkpoint), "--outtype", outtype, "--outfile", str(theirs)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ours = (
        SO8TToGGUFConverter(so8t_identity_dir, progress=False)
        .export(tmp_path / "ours.gguf", quant_types=[outtype.upper()], mmproj=False, sidecar=False)
        .texts[0]
        .path
    )
    a, b = metadata.read_gguf(ours), metadata.read_gguf(theirs)
    mine = {t.name: t for t in a.tensors}
    other = {t.name: t for t in b.tensors}
    assert set(mine) == set(other)
    with open(ours, "rb") as fa, open(theirs, "rb") as fb:
        for name, t in other.items():
            assert (mine[name].ggml_type, mine[name].dims) == (t.ggml_type, t.dims), name
            assert np.array_equal(_bits(_tensor_data(fa, mine[name])), _bits(_tensor_data(fb, t))), name
    for key in (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.pre",
        "qwen2vl.rope.dimension_sections",
        "qwen2vl.block_count",
    ):
        assert a.kv[key] == b.kv[key], key


#: numpy dtypes of the float GGML types whose values ``_bits`` compares; other types compare as bytes.
_FLOAT_DTYPES = {int(T.F32): np.float32, int(T.F16): np.float16}


def _tensor_data(handle, entry: metadata.TensorEntry) -> np.ndarray:
    """One tensor's stored data, read (not mapped): two whole-model files compared through memory maps kept
    every page in the process's RSS, 8.0 GiB at Qwen2-VL-2B size (F16), against one tensor at a time here."""
    handle.seek(entry.offset)
    raw = np.fromfile(handle, dtype=np.uint8, count=entry.nbytes)  # one pread is at most 2 GiB; this loops
    assert raw.size == entry.nbytes, f"{entry.name}: the file ends inside the tensor"
    return raw.view(_FLOAT_DTYPES.get(entry.ggml_type, np.uint8))


def test_fallback_messages_keep_the_tensor_lines_only():
    from so8t.gguf.llama_mix import fallback_messages

    log = ("llama_tensor_get_type : tensor cols 384 x 1152 are not divisible by 256, required for q4_K - "
           "using fallback quantization q5_0\n"
           "[  12/ 39]   blk.0.ffn_down.weight - [ 1152,   384,     1,     1], type =    f32, converting to q5_0\n"
           "llama_model_quantize_impl: WARNING: 3 of 39 tensor(s) required fallback quantization\n")
    kept = ("llama_tensor_get_type : tensor cols 384 x 1152 are not divisible by 256, required for q4_K - using "
            "fallback quantization q5_0")
    assert fallback_messages(log) == [kept]
