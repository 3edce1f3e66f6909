"""Metadata checks of the text GGUF, against what llama.cpp needs (the mmproj's: ``checks_mmproj``).

llama.cpp's ``qwen2vl`` loader reads its hyper-parameters with exact GGUF types (UINT32 sizes, FLOAT32
epsilon and rope base, ``rope.dimension_sections`` as an INT32 array of 4) and refuses a file whose
tokenizer it cannot build (``gpt2`` model, a known pre-tokenizer, merges). The tables below are that
contract, as data; each check reads them. ``so8t.*`` keys are ours (``so8t.gguf.metadata``).

Consistency checks compare the file with the sidecar (the content-hash link, sizes, map, gate sites,
safety classes) and, given ``--so8t-model``, with the SO8T checkpoint (hyper-parameters, tokenizer,
``so8t.*`` keys), using the exporter's own readers of the checkpoint so both sides read it alike.
"""

from __future__ import annotations

import re

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, LlamaFileType

from so8t.group import ROTATION_DIM
from so8t.validation.context import CheckFailed, Context, check, expect, passed, skipped

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
#: Matrix types llama.cpp's quantizer may pick inside a K-quant or i-quant mix (it keeps some tensors
#: higher and falls back to 32-blocks, IQ4_NL for i-quants, when a row does not fit 256).
K_MIX_TYPES = {_T.Q2_K, _T.Q3_K, _T.Q4_K, _T.Q5_K, _T.Q6_K, _T.Q8_0, _T.Q4_0, _T.Q4_1, _T.Q5_0, _T.Q5_1,
               _T.IQ4_XS, _T.IQ4_NL, _T.IQ3_S, _T.IQ3_XXS, _T.IQ2_S, _T.IQ2_XS, _T.IQ2_XXS}


def expected_matrix_types(file_type_name: str, row_length: int) -> set[GGMLQuantizationType] | None:
    """Types a 2-D tensor with ``row_length`` may have in a file of ``general.file_type`` name (as in
    ``so8t.gguf.quant.QUANT_TYPES``); None for a file type we do not export. Float file types follow the
    exporter's own rule (``quant.tensor_type``); block types (llama.cpp's mixes) allow llama.cpp's choices,
    and a float type only for rows that fit no 32-block."""
    from so8t.gguf import quant

    qt = next((q for q in quant.QUANT_TYPES.values() if q.file_type.name == file_type_name), None)
    if qt is None:
        return None
    if qt.method is quant.Method.FLOAT:
        return {quant.tensor_type(qt, (1, row_length))}
    return K_MIX_TYPES if row_length % 32 == 0 else {_T.F16, _T.BF16, _T.F32}


def typed_value(ctx: Context, key: str, types: list[GGUFValueType]):
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


def check_table(ctx: Context, table: dict[str, tuple[list[GGUFValueType], bool]]) -> dict:
    values = {}
    for key, (types, required) in table.items():
        if ctx.field(key) is None and not required:
            continue
        values[key] = typed_value(ctx, key, types)
    return values


def hparams(ctx: Context) -> dict[str, int | float]:
    """The hyper-parameters (short names), once metadata.hparams passed."""
    return {key.split(".", 1)[1]: ctx.value(key) for key in HPARAM_KEYS}


# ------------------------------------------------------------------------------------ metadata


@check("metadata.architecture", "metadata", requires=("file.readable",))
def architecture(ctx: Context):
    arch = typed_value(ctx, "general.architecture", [_STR])
    expect(arch == ARCH, f"general.architecture is {arch!r}; stock llama.cpp needs {ARCH!r}", measured=arch, bound=ARCH)
    return passed(f"general.architecture = {ARCH!r}", measured=arch, bound=ARCH)


@check("metadata.hparams", "metadata", requires=("metadata.architecture",))
def hparams_present(ctx: Context):
    values = {key: typed_value(ctx, key, [t]) for key, t in HPARAM_KEYS.items()}
    for key, value in values.items():
        expect(np.isfinite(value) and value > 0, f"{key} = {value} must be positive", measured=value)
    hp = hparams(ctx)
    hidden, heads, kv = hp["embedding_length"], hp["attention.head_count"], hp["attention.head_count_kv"]
    expect(hidden % heads == 0, f"embedding_length {hidden} not divisible by head_count {heads}")
    expect(heads % kv == 0, f"head_count {heads} not divisible by head_count_kv {kv}")
    expect(hidden % ROTATION_DIM == 0, f"embedding_length {hidden} is not a multiple of {ROTATION_DIM} (SO(8) blocks)")
    n_tensors = len(ctx.reader.tensors)
    expect(hp["block_count"] <= n_tensors, f"block_count {hp['block_count']} exceeds the {n_tensors} tensors in "
           "the file", measured=hp["block_count"], bound=n_tensors)
    expect(hp["attention.layer_norm_rms_epsilon"] < 1e-2, f"rms epsilon {hp['attention.layer_norm_rms_epsilon']} "
           "is implausible (Qwen2-VL uses 1e-6)", measured=hp["attention.layer_norm_rms_epsilon"], bound=1e-2)
    return passed(f"{len(values)} qwen2vl hyper-parameters, types as llama.cpp reads them", measured=len(values))


@check("metadata.rope_sections", "metadata", requires=("metadata.hparams",))
def rope_sections(ctx: Context):
    sections = typed_value(ctx, ROPE_SECTIONS_KEY, [_ARR, GGUFValueType.INT32])
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

    raw = typed_value(ctx, "general.file_type", [_U32])
    try:
        ftype = LlamaFileType(raw)
    except ValueError:
        raise CheckFailed(f"general.file_type {raw} is not a llama.cpp file type", measured=raw) from None
    expect(expected_matrix_types(ftype.name, 32) is not None, f"general.file_type {ftype.name} is not one we "
           "export", measured=ftype.name)
    qv = typed_value(ctx, "general.quantization_version", [_U32])
    expect(qv == GGML_QUANT_VERSION, f"general.quantization_version {qv}, expected {GGML_QUANT_VERSION}",
           measured=qv, bound=GGML_QUANT_VERSION)
    for t in ctx.reader.tensors:
        kind = GGMLQuantizationType(t.tensor_type)
        if len(t.shape) >= 2:
            allowed = expected_matrix_types(ftype.name, int(t.shape[0]))
            expect(kind in allowed, f"tensor {t.name} is {kind.name}, impossible in a {ftype.name} file "
                   f"(expected {'/'.join(sorted(a.name for a in allowed))})", measured=kind.name, bound=ftype.name)
    return passed(f"{ftype.name}: every matrix has the type this file type gives it", measured=ftype.name)


@check("metadata.so8t_keys", "metadata", requires=("file.readable",))
def so8t_keys(ctx: Context):
    from so8t.gguf.metadata import FORMAT_VERSION, PLACEHOLDER

    v = check_table(ctx, SO8T_KEYS)
    expect(v["so8t.format_version"] == FORMAT_VERSION, f"so8t.format_version {v['so8t.format_version']}, "
           f"this validator reads {FORMAT_VERSION}", measured=v["so8t.format_version"], bound=FORMAT_VERSION)
    expect(v["so8t.rotation_dim"] == ROTATION_DIM, f"so8t.rotation_dim {v['so8t.rotation_dim']}: SO8T means "
           f"{ROTATION_DIM}", measured=v["so8t.rotation_dim"], bound=ROTATION_DIM)
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
    want = TextHParams.from_text(ckpt.reader.text_config, ckpt.reader.model_config.path)
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
