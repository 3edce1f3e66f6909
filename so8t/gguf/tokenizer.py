"""Tokenizer metadata of the text GGUF, read from a checkpoint's tokenizer files.

llama.cpp's ``gpt2`` (byte-level BPE) tokenizer needs the token strings in id order, a type per token,
the merges, the special ids and the name of the pre-tokenizer (``qwen2``: the regex Qwen2 splits text
with). The token array has exactly ``vocab_size`` entries, the embedding's row count: ids the tokenizer
does not use are named ``[PAD{id}]`` and typed UNUSED, as llama.cpp's converter does; added tokens marked
``special`` are CONTROL (so llama.cpp parses ``<|im_start|>`` in prompts only on request), other added
tokens USER_DEFINED, the rest NORMAL.

Sources, first found wins: ``vocab.json`` / ``merges.txt`` then ``tokenizer.json``; added tokens from
``tokenizer.json`` then ``tokenizer_config.json``; special tokens from ``tokenizer_config.json`` then the
``*_token_id`` entries of ``config.json``; the chat template from ``tokenizer_config.json``, then
``chat_template.jinja``, then ``chat_template.json`` (so8t/checkpoint/chat_template.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gguf import TokenType

from so8t.checkpoint.chat_template import read_chat_template
from so8t.errors import CheckpointError

PRE_TOKENIZER = "qwen2"


@dataclass
class TokenizerMeta:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    add_bos: bool
    chat_template: str | None

    def add_to(self, writer) -> None:
        """Write the ``tokenizer.*`` keys to a ``gguf.GGUFWriter``."""
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(PRE_TOKENIZER)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        for add, value in (
            (writer.add_bos_token_id, self.bos_id),
            (writer.add_eos_token_id, self.eos_id),
            (writer.add_pad_token_id, self.pad_id),
        ):
            if value is not None:
                add(value)
        writer.add_add_bos_token(self.add_bos)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"unreadable tokenizer file: {err}", path=path) from err


def _token_content(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def read_tokenizer(model_dir: str | Path, vocab_size: int) -> TokenizerMeta:
    """Tokenizer metadata of the checkpoint in ``model_dir`` for an embedding of ``vocab_size`` rows."""
    model_dir = Path(model_dir)
    tok_json = _optional_json(model_dir / "tokenizer.json")
    tok_cfg = _optional_json(model_dir / "tokenizer_config.json")
    config = _optional_json(model_dir / "config.json")
    vocab = _read_vocab(model_dir, tok_json)
    merges = _read_merges(model_dir, tok_json)
    if not merges:
        raise CheckpointError(
            "no BPE merges (merges.txt or tokenizer.json)",
            path=model_dir,
            hint="llama.cpp cannot load a gpt2 vocab without merges",
        )
    added = _added_tokens(tok_json, tok_cfg)
    tokens, types = _token_table(model_dir, vocab, added, vocab_size)
    ids = {content: i for i, (content, _) in added.items()}
    ids.update({t: i for t, i in vocab.items() if t not in ids})
    return TokenizerMeta(
        tokens=tokens,
        token_types=types,
        merges=merges,
        bos_id=_special_id("bos", ids, tok_cfg, config),
        eos_id=_special_id("eos", ids, tok_cfg, config),
        pad_id=_special_id("pad", ids, tok_cfg, config),
        add_bos=bool(tok_cfg.get("add_bos_token", False)),
        chat_template=read_chat_template(model_dir, tok_cfg),
    )


def _optional_json(path: Path) -> dict:
    """The JSON object in ``path``, or ``{}`` when there is no such file."""
    return _load_json(path) if path.is_file() else {}


def _read_vocab(model_dir: Path, tok_json: dict) -> dict[str, int]:
    """token -> id from vocab.json, else from tokenizer.json's BPE model; ``CheckpointError`` if neither."""
    if (model_dir / "vocab.json").is_file():
        vocab: dict[str, int] = _load_json(model_dir / "vocab.json")
    else:
        vocab = tok_json.get("model", {}).get("vocab") or {}
    if not vocab:
        raise CheckpointError("no BPE vocabulary (vocab.json or tokenizer.json)", path=model_dir)
    return vocab


def _added_tokens(tok_json: dict, tok_cfg: dict) -> dict[int, tuple[str, bool]]:
    """id -> (content, special) of the added tokens; tokenizer.json wins over tokenizer_config.json."""
    added: dict[int, tuple[str, bool]] = {}
    for entry in tok_json.get("added_tokens", []):
        added[int(entry["id"])] = (entry["content"], bool(entry.get("special", False)))
    for key, entry in (tok_cfg.get("added_tokens_decoder") or {}).items():
        added.setdefault(int(key), (entry["content"], bool(entry.get("special", False))))
    return added


def _token_table(model_dir: Path, vocab: dict[str, int], added: dict[int, tuple[str, bool]],
                 vocab_size: int) -> tuple[list[str], list[int]]:
    """One token and one ``TokenType`` per embedding row: added tokens (CONTROL if special, else
    USER_DEFINED), then the BPE vocabulary (NORMAL), ``[PAD<i>]`` (UNUSED) for rows no token names.
    ``CheckpointError`` when a token id lies beyond the embedding."""
    by_id = {i: t for t, i in vocab.items()}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i in added:
            content, special = added[i]
            tokens.append(content)
            types.append(int(TokenType.CONTROL if special else TokenType.USER_DEFINED))
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(int(TokenType.NORMAL))
        else:
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
    beyond = [i for i in list(by_id) + list(added) if i >= vocab_size]
    if beyond:
        raise CheckpointError(
            f"tokenizer has ids up to {max(beyond)} but the embedding has only {vocab_size} rows",
            path=model_dir,
        )
    return tokens, types


def _special_id(kind: str, ids: dict[str, int], tok_cfg: dict, config: dict) -> int | None:
    """Id of the ``kind`` ("bos", "eos", "pad") token: tokenizer_config.json's ``<kind>_token`` looked up
    in ``ids``, else ``<kind>_token_id`` of config.json (top level, then ``text_config``; a list gives its
    first id); None when neither names one."""
    content = _token_content(tok_cfg.get(f"{kind}_token"))
    if content is not None and content in ids:
        return ids[content]
    for scope in (config, config.get("text_config") or {}):
        value = scope.get(f"{kind}_token_id")
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return None


def _read_merges(model_dir: Path, tok_json: dict) -> list[str]:
    path = model_dir / "merges.txt"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()
        return [line for line in lines if line and not line.startswith("#version")]
    merges = tok_json.get("model", {}).get("merges") or []
    return [m if isinstance(m, str) else " ".join(m) for m in merges]

