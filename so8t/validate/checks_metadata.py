"""File and metadata checks of the text GGUF (and the mmproj's header), against what llama.cpp needs.

llama.cpp's ``qwen2vl`` loader reads its hyper-parameters with exact GGUF types (UINT32 sizes, FLOAT32
epsilon and rope base, ``rope.dimension_sections`` as an INT32 array of 4) and refuses a file whose
tokenizer it cannot build (``gpt2`` model, a known pre-tokenizer, merges). The tables below are that
contract, as data; each check reads them. ``so8t.*`` keys are ours (``so8t.gguf.metadata``).

Consistency checks compare the file with the sidecar (the content-hash link, sizes, map, gate sites,
safety classes) and, given ``--so8t-model``, with the SO8T checkpoint (hyper-parameters, tokenizer,
``so8t.*`` keys), using the exporter's own readers of the checkpoint so both sides read it alike.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, LlamaFileType, TokenType

from so8t.validate.context import CheckFailed, Context, check, expect, passed, skipped

ARCH = "qwen2vl"
_U32, _F32, _STR, _BOOL, _ARR = (GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.STRING,
                                 GGUFValueType.BOOL, GGUFValueType.ARRAY)

#: Hyper-parameters llama.cpp requires for qwen2vl: key -> GGUF type (scalars).
HPARAM_KEYS: dict[str, GGUFValueType] = {
    f"{ARCH}.context_length": _U32,
    f"{ARCH}.embedding_length": _U32,
    f"{ARCH}.block_count": _U32,
    f"{ARCH}.feed_forward_length": _U32,
    f"{ARCH}.attention.head_count": _U32,
    f"{ARCH}.attention.head_count_kv": _U32,
    f"{ARCH}.attention.layer_norm_rms_epsilon": _F32,
    f"{ARCH}.rope.freq_base": _F32,
}
ROPE_SECTIONS_KEY = f"{ARCH}.rope.dimension_sections"

#: Tokenizer keys: key -> (GGUF type list as gguf-py reports it, required).
TOKENIZER_KEYS: dict[str, tuple[list[GGUFValueType], bool]] = {
    "tokenizer.ggml.model": ([_STR], True),
    "tokenizer.ggml.pre": ([_STR], True),
    "tokenizer.ggml.tokens": ([_ARR, _STR], True),
    "tokenizer.ggml.token_type": ([_ARR, GGUFValueType.INT32], True),
    "tokenizer.ggml.merges": ([_ARR, _STR], True),
    "tokenizer.ggml.bos_token_id": ([_U32], True),
    "tokenizer.ggml.eos_token_id": ([_U32], True),
    "tokenizer.ggml.padding_token_id": ([_U32], False),
    "tokenizer.ggml.add_bos_token": ([_BOOL], True),
    "tokenizer.chat_template": ([_STR], True),
}
TOKENIZER_VALUES = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2", "tokenizer.ggml.add_bos_token": False}

#: ``so8t.*`` keys of the text file: key -> (GGUF types, required).
SO8T_KEYS: dict[str, tuple[list[GGUFValueType], bool]] = {
    "so8t.format_version": ([_U32], True),
    "so8t.rotation_dim": ([_U32], True),
    "so8t.group": ([_STR], True),
    "so8t.gate_sites": ([_ARR, _STR], True),
    "so8t.map": ([_STR], True),
    "so8t.folded": ([_BOOL], True),
    "so8t.safety_classes": ([_ARR, _STR], True),
    "so8t.content_hash": ([_STR], True),
    "so8t.source_model": ([_STR], False),
    "so8t.source_sha256": ([_STR], False),
}
ROTATION_MAPS = ("exp", "cayley")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

_T = GGMLQuantizationType
#: Matrix types llama.cpp's quantizer may pick inside a K-quant mix (it keeps some tensors higher and
#: falls back to 32-blocks when a row does not fit 256).
K_MIX_TYPES = {_T.Q2_K, _T.Q3_K, _T.Q4_K, _T.Q5_K, _T.Q6_K, _T.Q8_0, _T.Q4_0, _T.Q4_1, _T.Q5_0, _T.Q5_1}


def expected_matrix_types(file_type_name: str, row_length: int) -> set[GGMLQuantizationType] | None:
    """Types a 2-D tensor with ``row_length`` may have in a file of ``general.file_type`` name (as in
    ``so8t.gguf.quant.QUANT_TYPES``); None for a file type we do not export. Numpy types follow the
    exporter's own rule (``quant.tensor_type``); K-quant mixes allow llama.cpp's choices, and a float type
    only for rows that fit no 32-block."""
    from so8t.gguf import quant

    qt = next((q for q in quant.QUANT_TYPES.values() if q.file_type.name == file_type_name), None)
    if qt is None:
        return None
    if qt.method is quant.Method.NUMPY:
        return {quant.tensor_type(qt, (1, row_length))[0]}
    return K_MIX_TYPES if row_length % 32 == 0 else {_T.F16, _T.BF16, _T.F32}


def _typed(ctx: Context, key: str, types: list[GGUFValueType]):
    """Value of ``key`` if present with exactly ``types``; raise CheckFailed otherwise."""
    fld = ctx.field(key)
    expect(fld is not None, f"metadata key {key} is missing")
    got = [GGUFValueType(t) for t in fld.types]
    expect(got == types, f"{key} has type {'/'.join(t.name for t in got)}, llama.cpp needs "
                         f"{'/'.join(t.name for t in types)}")
    try:
        return fld.contents()
    except (UnicodeDecodeError, ValueError, IndexError) as err:
        raise CheckFailed(f"{key} cannot be decoded: {err}") from err


def _check_table(ctx: Context, table: dict[str, tuple[list[GGUFValueType], bool]]) -> dict:
    values = {}
    for key, (types, required) in table.items():
        if ctx.field(key) is None and not required:
            continue
        values[key] = _typed(ctx, key, types)
    return values


def hparams(ctx: Context) -> dict[str, int | float]:
    """The hyper-parameters (short names), once metadata.hparams passed."""
    return {key.split(".", 1)[1]: ctx.value(key) for key in HPARAM_KEYS}


# ---------------------------------------------------------------------------------------- file


@check("file.exists", "file")
def file_exists(ctx: Context):
    path = ctx.gguf_path
    expect(path.exists(), f"{path}: no such file")
    expect(path.is_file(), f"{path}: not a regular file")
    size = path.stat().st_size
    expect(size > 24, f"{path}: {size} bytes, too short for a GGUF header", measured=size)
    return passed(f"{size} bytes", measured=size)


@check("file.readable", "file", requires=("file.exists",))
def file_readable(ctx: Context):
    from gguf import GGUFReader

    with open(ctx.gguf_path, "rb") as handle:
        magic = handle.read(4)
    expect(magic == b"GGUF", f"{ctx.gguf_path}: not a GGUF file (magic {magic!r})", measured=repr(magic))
    try:
        reader = GGUFReader(ctx.gguf_path)
    except Exception as err:  # gguf-py raises ValueError, IndexError, struct/Unicode errors on bad bytes
        raise CheckFailed(f"{ctx.gguf_path}: gguf-py cannot parse the file "
                          f"(truncated or corrupt): {type(err).__name__}: {err}") from err
    version = int(reader.fields["GGUF.version"].parts[0][0])
    expect(version == 3, f"GGUF version {version}, llama.cpp writes and we expect 3", measured=version, bound=3)
    ctx.reader = reader
    return passed(f"GGUF v{version}, {len(reader.fields) - 3} keys, {len(reader.tensors)} tensors",
                  measured=len(reader.tensors))


@check("file.layout", "file", requires=("file.readable",))
def file_layout(ctx: Context):
    """Tensor data: aligned offsets, inside the file, no overlap, nothing after the last tensor."""
    reader, size = ctx.reader, ctx.gguf_path.stat().st_size
    align = int(reader.alignment)
    spans = []
    for t in reader.tensors:
        start = int(t.data_offset)
        expect((start - int(reader.data_offset)) % align == 0, f"tensor {t.name} data offset not {align}-aligned")
        expect(start + int(t.n_bytes) <= size, f"tensor {t.name} data runs past the end of the file "
               f"({start + int(t.n_bytes)} > {size} bytes): truncated", measured=size, bound=start + int(t.n_bytes))
        spans.append((start, start + int(t.n_bytes), t.name))
    spans.sort()
    for (_s0, e0, n0), (s1, _e1, n1) in itertools.pairwise(spans):
        expect(e0 <= s1, f"tensors {n0} and {n1} overlap")
    end = spans[-1][1] if spans else int(reader.data_offset)
    padded = end + (-end) % align
    expect(size in (end, padded), f"{size - padded} unexpected bytes after the last tensor "
           f"(file {size} bytes, tensor data ends at {padded})", measured=size, bound=padded)
    return passed(f"{len(spans)} tensors in bounds, aligned to {align}, no trailing bytes", measured=size, bound=padded)


# ------------------------------------------------------------------------------------ metadata


@check("metadata.architecture", "metadata", requires=("file.readable",))
def architecture(ctx: Context):
    arch = _typed(ctx, "general.architecture", [_STR])
    expect(arch == ARCH, f"general.architecture is {arch!r}; stock llama.cpp needs {ARCH!r}", measured=arch, bound=ARCH)
    return passed(f"general.architecture = {ARCH!r}", measured=arch, bound=ARCH)


@check("metadata.hparams", "metadata", requires=("metadata.architecture",))
def hparams_present(ctx: Context):
    values = {key: _typed(ctx, key, [t]) for key, t in HPARAM_KEYS.items()}
    for key, value in values.items():
        expect(np.isfinite(value) and value > 0, f"{key} = {value} must be positive", measured=value)
    hp = hparams(ctx)
    hidden, heads, kv = hp["embedding_length"], hp["attention.head_count"], hp["attention.head_count_kv"]
    expect(hidden % heads == 0, f"embedding_length {hidden} not divisible by head_count {heads}")
    expect(heads % kv == 0, f"head_count {heads} not divisible by head_count_kv {kv}")
    expect(hidden % 8 == 0, f"embedding_length {hidden} is not a multiple of 8 (SO(8) blocks)")
    n_tensors = len(ctx.reader.tensors)
    expect(hp["block_count"] <= n_tensors, f"block_count {hp['block_count']} exceeds the {n_tensors} tensors in "
           "the file", measured=hp["block_count"], bound=n_tensors)
    expect(hp["attention.layer_norm_rms_epsilon"] < 1e-2, f"rms epsilon {hp['attention.layer_norm_rms_epsilon']} "
           "is implausible (Qwen2-VL uses 1e-6)", measured=hp["attention.layer_norm_rms_epsilon"], bound=1e-2)
    return passed(f"{len(values)} qwen2vl hyper-parameters, types as llama.cpp reads them", measured=len(values))


@check("metadata.rope_sections", "metadata", requires=("metadata.hparams",))
def rope_sections(ctx: Context):
    sections = _typed(ctx, ROPE_SECTIONS_KEY, [_ARR, GGUFValueType.INT32])
    expect(len(sections) == 4, f"{ROPE_SECTIONS_KEY} has {len(sections)} entries, llama.cpp reads exactly 4",
           measured=len(sections), bound=4)
    expect(all(s >= 0 for s in sections), f"{ROPE_SECTIONS_KEY} has negative entries: {sections}")
    hp = hparams(ctx)
    head_dim = hp["embedding_length"] // hp["attention.head_count"]
    expect(2 * sum(sections) == head_dim, f"{ROPE_SECTIONS_KEY} {sections} sums to {sum(sections)}, M-RoPE needs "
           f"head_dim/2 = {head_dim // 2}", measured=sum(sections), bound=head_dim // 2)
    return passed(f"{sections} (sum = head_dim/2 = {head_dim // 2})", measured=str(sections))


@check("metadata.file_type", "metadata", requires=("file.readable",))
def file_type(ctx: Context):
    from gguf import GGML_QUANT_VERSION

    raw = _typed(ctx, "general.file_type", [_U32])
    try:
        ftype = LlamaFileType(raw)
    except ValueError:
        raise CheckFailed(f"general.file_type {raw} is not a llama.cpp file type", measured=raw) from None
    expect(expected_matrix_types(ftype.name, 32) is not None, f"general.file_type {ftype.name} is not one we "
           "export", measured=ftype.name)
    qv = _typed(ctx, "general.quantization_version", [_U32])
    expect(qv == GGML_QUANT_VERSION, f"general.quantization_version {qv}, expected {GGML_QUANT_VERSION}",
           measured=qv, bound=GGML_QUANT_VERSION)
    for t in ctx.reader.tensors:
        kind = GGMLQuantizationType(t.tensor_type)
        if len(t.shape) >= 2:
            allowed = expected_matrix_types(ftype.name, int(t.shape[0]))
            expect(kind in allowed, f"tensor {t.name} is {kind.name}, impossible in a {ftype.name} file "
                   f"(expected {'/'.join(sorted(a.name for a in allowed))})", measured=kind.name, bound=ftype.name)
    return passed(f"{ftype.name}: every matrix has the type this file type gives it", measured=ftype.name)


@check("metadata.tokenizer", "metadata", requires=("file.readable",))
def tokenizer_keys(ctx: Context):
    values = _check_table(ctx, TOKENIZER_KEYS)
    for key, want in TOKENIZER_VALUES.items():
        expect(values[key] == want, f"{key} is {values[key]!r}, expected {want!r}", measured=values[key], bound=want)
    expect(bool(values["tokenizer.chat_template"].strip()), "tokenizer.chat_template is empty")
    return passed("gpt2 model, qwen2 pre-tokenizer, tokens, types, merges, special ids, chat template")


def _embedding_rows(ctx: Context) -> int:
    for t in ctx.reader.tensors:
        if t.name == "token_embd.weight" and len(t.shape) == 2:
            return int(t.shape[1])
    raise CheckFailed("token_embd.weight (2-D) is missing, so the vocabulary size is unknown")


def byte_level_symbols() -> list[str]:
    """The 256 characters byte-level BPE (gpt2) spells bytes with, in byte order: printable Latin-1 as
    itself, the other bytes shifted to U+0100 upwards."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


@check("metadata.vocabulary", "metadata", requires=("metadata.tokenizer",))
def vocabulary(ctx: Context):
    """A byte-level BPE llama.cpp can run: one token and type per embedding row, unique tokens, every
    byte spelled, every merge ``L R`` of existing tokens producing an existing token, special ids in
    range and typed CONTROL."""
    tokens = ctx.value("tokenizer.ggml.tokens")
    types = ctx.value("tokenizer.ggml.token_type")
    merges = ctx.value("tokenizer.ggml.merges")
    expect(tokens is not None and types is not None and merges is not None,
           "tokens, token types or merges are not valid UTF-8")
    rows = _embedding_rows(ctx)
    expect(len(tokens) == rows, f"{len(tokens)} tokens but token_embd has {rows} rows", measured=len(tokens), bound=rows)
    expect(len(types) == rows, f"{len(types)} token types for {rows} tokens", measured=len(types), bound=rows)
    valid = {int(t) for t in TokenType}
    bad_types = [i for i, t in enumerate(types) if t not in valid]
    expect(not bad_types, f"{len(bad_types)} invalid token types, e.g. id {bad_types[:1]}", measured=len(bad_types))
    ids = {tok: i for i, tok in enumerate(tokens)}
    expect(len(ids) == len(tokens), f"{len(tokens) - len(ids)} duplicate tokens", measured=len(tokens) - len(ids))
    normal = int(TokenType.NORMAL)
    missing_bytes = [c for c in byte_level_symbols() if c not in ids or types[ids[c]] != normal]
    expect(not missing_bytes, f"{len(missing_bytes)} of the 256 byte-level symbols are not NORMAL tokens "
           f"(llama.cpp cannot encode those bytes)", measured=len(missing_bytes), bound=0)
    expect(len(set(merges)) == len(merges), f"{len(merges) - len(set(merges))} duplicate merges")
    for n, merge in enumerate(merges):
        parts = merge.split(" ")
        expect(len(parts) == 2 and all(parts), f"merge #{n} {merge!r} is not 'left right'")
        for piece in (parts[0], parts[1], parts[0] + parts[1]):
            i = ids.get(piece)
            expect(i is not None and types[i] == normal,
                   f"merge #{n} {merge!r}: {piece!r} is not a NORMAL token of the vocabulary")
    for key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id"):
        value = ctx.value(key)
        if value is None:
            continue
        expect(0 <= value < rows, f"{key} {value} outside the vocabulary of {rows}", measured=value, bound=rows)
        expect(types[value] == int(TokenType.CONTROL), f"{key} {value} ({tokens[value]!r}) is not a CONTROL token",
               measured=types[value], bound=int(TokenType.CONTROL))
    return passed(f"{rows} tokens, {len(merges)} merges, consistent", measured=rows)


@check("metadata.so8t_keys", "metadata", requires=("file.readable",))
def so8t_keys(ctx: Context):
    from so8t.gguf.metadata import FORMAT_VERSION, PLACEHOLDER

    v = _check_table(ctx, SO8T_KEYS)
    expect(v["so8t.format_version"] == FORMAT_VERSION, f"so8t.format_version {v['so8t.format_version']}, "
           f"this validator reads {FORMAT_VERSION}", measured=v["so8t.format_version"], bound=FORMAT_VERSION)
    expect(v["so8t.rotation_dim"] == 8, f"so8t.rotation_dim {v['so8t.rotation_dim']}: SO8T means 8",
           measured=v["so8t.rotation_dim"], bound=8)
    expect(v["so8t.group"] == "SO(8)", f"so8t.group {v['so8t.group']!r}, expected 'SO(8)'")
    expect(v["so8t.map"] in ROTATION_MAPS, f"so8t.map {v['so8t.map']!r} not one of {ROTATION_MAPS}")
    expect(v["so8t.folded"] is True, "so8t.folded is false: llama.cpp cannot run unfolded gates")
    sites = text_gate_sites(v["so8t.gate_sites"])
    expect(sites in known_gate_sites(), f"so8t.gate_sites {v['so8t.gate_sites']} is not the gate layout of "
           "format version 1 (so8t.adapters.qwen2vl.FOLD_SITES)", measured=str(v["so8t.gate_sites"]))
    from so8t.safety import SAFETY_CLASSES

    expect(tuple(v["so8t.safety_classes"]) == SAFETY_CLASSES, f"so8t.safety_classes {v['so8t.safety_classes']} "
           f"!= {list(SAFETY_CLASSES)}", measured=str(v["so8t.safety_classes"]), bound=str(list(SAFETY_CLASSES)))
    digest = v["so8t.content_hash"]
    expect(digest != PLACEHOLDER, "so8t.content_hash is still the placeholder: the export did not finish")
    expect(bool(_HEX64.match(digest)), f"so8t.content_hash {digest[:16]!r}... is not a sha256 hex digest")
    return passed(f"{len(v)} so8t.* keys, map {v['so8t.map']}", measured=digest)


def text_gate_sites(values: list[str]) -> dict[str, tuple[str, ...]]:
    """``["site=g1,g2", ...]`` (the text file's spelling) -> ``{site: (g1, g2)}``; a bare gate name
    (a plain checkpoint exported as identity gates) maps to ``{name: ()}``."""
    sites = {}
    for entry in values:
        site, _, gates = str(entry).partition("=")
        sites[site] = tuple(g for g in gates.split(",") if g)
    return sites


def known_gate_sites() -> list[dict[str, tuple[str, ...]]]:
    """The gate layouts a text file may declare: the adapter's sites, or its bare gate names."""
    from so8t.adapters.qwen2vl import FOLD_SITES, GATE_NAMES

    return [{site.name: tuple(site.gates) for site in FOLD_SITES}, {g: () for g in GATE_NAMES}]


@check("metadata.sidecar_consistency", "metadata", requires=("metadata.so8t_keys", "metadata.hparams",
                                                             "file.sidecar_readable"))
def sidecar_consistency(ctx: Context):
    side, hp = ctx.sidecar, hparams(ctx)
    text_hash = ctx.value("so8t.content_hash")
    expect(side.text_content_hash == text_hash, "the sidecar belongs to another text file: its "
           f"so8t.text_content_hash {side.text_content_hash[:12]}... != {text_hash[:12]}...",
           measured=side.text_content_hash, bound=text_hash)
    pairs = [
        ("embedding_length", side.hidden_size, hp["embedding_length"]),
        ("block_count", side.num_layers, hp["block_count"]),
        ("map", side.rotation_map, ctx.value("so8t.map")),
        ("safety_classes", list(side.safety_classes), ctx.value("so8t.safety_classes")),
        ("gate_sites", {k: tuple(v) for k, v in side.gate_sites.items()}, text_gate_sites(ctx.value("so8t.gate_sites"))),
    ]
    for what, got, want in pairs:
        expect(got == want, f"sidecar {what} {got!r} != text file {want!r}", measured=str(got), bound=str(want))
    return passed("content-hash link, sizes, map, gate sites and safety classes agree", measured=text_hash)


@check("metadata.checkpoint_consistency", "metadata", requires=("metadata.so8t_keys", "metadata.rope_sections",
                                                                "metadata.vocabulary"))
def checkpoint_consistency(ctx: Context):
    if ctx.so8t_model is None:
        return skipped("no --so8t-model given")
    from so8t.checkpoint.so8t_dir import SO8TCheckpoint
    from so8t.gguf.metadata import CONTENT_HASH_KEY
    from so8t.gguf.metadata import so8t_keys as expected_so8t_keys
    from so8t.gguf.text import TextHParams
    from so8t.gguf.tokenizer import read_tokenizer

    ckpt = ctx.cache.get("checkpoint") or SO8TCheckpoint(ctx.so8t_model)
    ctx.cache["checkpoint"] = ckpt
    want = TextHParams.from_config(ckpt.reader.config)
    def f32(x: float) -> float:  # the file stores float32
        return float(np.float32(x))

    expected = {
        f"{ARCH}.context_length": want.context_length,
        f"{ARCH}.embedding_length": want.hidden_size,
        f"{ARCH}.block_count": want.n_layers,
        f"{ARCH}.feed_forward_length": want.intermediate_size,
        f"{ARCH}.attention.head_count": want.n_heads,
        f"{ARCH}.attention.head_count_kv": want.n_kv_heads,
        f"{ARCH}.attention.layer_norm_rms_epsilon": f32(want.rms_norm_eps),
        f"{ARCH}.rope.freq_base": f32(want.rope_theta),
        ROPE_SECTIONS_KEY: list(want.mrope_section),
    }
    for key, value in expected_so8t_keys(ckpt.reader.config).items():
        if key != CONTENT_HASH_KEY:
            expected[key] = value
    for key, value in expected.items():
        got = ctx.value(key)
        expect(got == value, f"{key} is {got!r}, the checkpoint says {value!r}", measured=str(got), bound=str(value))
    tok = read_tokenizer(ckpt.path, want.vocab_size)
    tok_expected = {
        "tokenizer.ggml.tokens": tok.tokens,
        "tokenizer.ggml.token_type": tok.token_types,
        "tokenizer.ggml.merges": tok.merges,
        "tokenizer.ggml.bos_token_id": tok.bos_id,
        "tokenizer.ggml.eos_token_id": tok.eos_id,
        "tokenizer.ggml.padding_token_id": tok.pad_id,
        "tokenizer.ggml.add_bos_token": tok.add_bos,
        "tokenizer.chat_template": tok.chat_template,
    }
    for key, value in tok_expected.items():
        got = ctx.value(key)
        if got != value:
            where = ""
            if isinstance(got, list) and isinstance(value, list):
                diff = next((i for i, (a, b) in enumerate(zip(got, value)) if a != b), min(len(got), len(value)))
                where = f" (first difference at index {diff}; lengths {len(got)} vs {len(value)})"
            raise CheckFailed(f"{key} differs from the checkpoint's tokenizer{where}")
    return passed(f"{len(expected) + len(tok_expected)} keys equal the checkpoint's config and tokenizer",
                  measured=len(expected) + len(tok_expected))


# -------------------------------------------------------------------------------------- mmproj

#: ``clip.vision.*`` keys llama.cpp's multimodal loader reads for qwen2vl_merger: key -> GGUF types.
MMPROJ_KEYS: dict[str, list[GGUFValueType]] = {
    "clip.projector_type": [_STR],
    "clip.has_vision_encoder": [_BOOL],
    "clip.vision.image_size": [_U32],
    "clip.vision.patch_size": [_U32],
    "clip.vision.embedding_length": [_U32],
    "clip.vision.feed_forward_length": [_U32],
    "clip.vision.projection_dim": [_U32],
    "clip.vision.block_count": [_U32],
    "clip.vision.attention.head_count": [_U32],
    "clip.vision.attention.layer_norm_epsilon": [_F32],
    "clip.vision.image_mean": [_ARR, _F32],
    "clip.vision.image_std": [_ARR, _F32],
}


@check("file.mmproj_readable", "file")
def mmproj_readable(ctx: Context):
    if ctx.mmproj_path is None:
        return skipped("no mmproj given or found next to the GGUF (mmproj-*.gguf)")
    from gguf import GGUFReader

    try:
        ctx.mmproj_reader = GGUFReader(ctx.mmproj_path)
    except Exception as err:  # gguf-py raises several types on corrupt bytes
        raise CheckFailed(f"{ctx.mmproj_path}: gguf-py cannot parse the mmproj: {type(err).__name__}: {err}") from err
    return passed(f"{len(ctx.mmproj_reader.tensors)} tensors", measured=len(ctx.mmproj_reader.tensors))


@check("metadata.mmproj", "metadata", requires=("file.mmproj_readable", "metadata.hparams"))
def mmproj_metadata(ctx: Context):
    from so8t.gguf import vision_names

    mm = Context(ctx.mmproj_path)
    mm.reader = ctx.mmproj_reader
    arch = _typed(mm, "general.architecture", [_STR])
    expect(arch == vision_names.ARCHITECTURE, f"mmproj general.architecture is {arch!r}, expected 'clip'")
    values = {key: _typed(mm, key, types) for key, types in MMPROJ_KEYS.items()}
    expect(values["clip.projector_type"] == vision_names.PROJECTOR_TYPE,
           f"clip.projector_type {values['clip.projector_type']!r}, expected {vision_names.PROJECTOR_TYPE!r}")
    expect(values["clip.has_vision_encoder"] is True, "clip.has_vision_encoder is false")
    hidden = hparams(ctx)["embedding_length"]
    proj = values["clip.vision.projection_dim"]
    expect(proj == hidden, f"mmproj projection_dim {proj} != text embedding_length {hidden}: llama.cpp refuses the "
           "pair", measured=proj, bound=hidden)
    expect(len(values["clip.vision.image_mean"]) == 3 and len(values["clip.vision.image_std"]) == 3,
           "image_mean / image_std need 3 channels")
    return passed(f"clip / qwen2vl_merger, projection {proj} = text hidden", measured=proj, bound=hidden)
