"""Tokenizer checks of the text GGUF: the keys llama.cpp's ``gpt2`` tokenizer needs, and a vocabulary it
can run.

Without the checkpoint, a vocabulary is checked for internal consistency, which catches nearly any
damage: one token and one type per embedding row, valid types, unique tokens, all 256 byte-level
symbols present as NORMAL tokens (llama.cpp cannot encode a byte without its symbol), every merge
``L R`` made of NORMAL tokens and producing a NORMAL token, no duplicate merges, special ids in range
and typed CONTROL. With ``--so8t-model`` the whole tokenizer is compared with the checkpoint's
(``metadata.checkpoint_consistency``).
"""

from __future__ import annotations

from gguf import GGUFValueType, TokenType

from so8t.validation.checks_metadata import check_table
from so8t.validation.context import CheckFailed, Context, check, expect, passed

_U32, _STR, _BOOL, _ARR = GGUFValueType.UINT32, GGUFValueType.STRING, GGUFValueType.BOOL, GGUFValueType.ARRAY

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


@check("metadata.tokenizer", "metadata", requires=("file.readable",))
def tokenizer_keys(ctx: Context):
    values = check_table(ctx, TOKENIZER_KEYS)
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
