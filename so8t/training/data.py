"""Training data: JSONL files -> tokenized examples with LM targets and an optional safety label.

One JSON object per line, either

* ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...], "label": ...}``, rendered
  with the checkpoint's own chat template. LM targets are the tokens of every assistant message (its
  content and the closing ``<|im_end|>``). A conversation that does not end with an assistant message is
  rendered with the generation prompt (``<|im_start|>assistant\\n``), exactly what ``so8t run`` feeds the
  safety head, so the head is trained on the position it reads at run time; or
* ``{"text": "..."}``: plain text, every token is an LM target.

``label`` is optional: ``"ALLOW"``, ``"ESCALATE"`` or ``"REFUSE"`` (index in ``so8t.safety.SAFETY_CLASSES``).
Any malformed line, unknown label or role, empty file, or a sequence longer than the model's context is a
:class:`~so8t.errors.DataError` naming ``file:line``; files are read completely before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from so8t.errors import DataError
from so8t.io import sha256_file
from so8t.safety import SAFETY_CLASSES

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    """One tokenized example. ``targets[t]`` is 1 where token ``t`` is an LM target (predicted from
    ``t-1``); ``label`` the safety class index or None; ``where`` is ``file:line``."""

    input_ids: tuple[int, ...]
    targets: tuple[int, ...]
    label: int | None
    where: str


@dataclass(frozen=True)
class Dataset:
    path: Path
    sha256: str
    examples: tuple[Example, ...]

    def __len__(self) -> int:
        return len(self.examples)


def load_tokenizer(model_dir: str | Path):
    """The checkpoint's own (fast) tokenizer, offline, with the chat template read where the exporter reads
    it (so8t/checkpoint/chat_template.py: ``tokenizer_config.json``, ``chat_template.jinja`` or
    ``chat_template.json``), so the head is trained on the prompt the exported file renders."""
    from transformers import AutoTokenizer

    from so8t.checkpoint.chat_template import read_chat_template

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    tokenizer.chat_template = read_chat_template(model_dir)
    return tokenizer


def _check_messages(messages, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise DataError("'messages' must be a non-empty list", path=where)
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or set(msg) - {"role", "content"} or "role" not in msg:
            raise DataError(f"message {i} must be an object with 'role' and 'content'", path=where)
        if msg["role"] not in ROLES:
            raise DataError(f"message {i} has unknown role {msg['role']!r}; expected {ROLES}", path=where)
        if not isinstance(msg.get("content"), str):
            raise DataError(f"message {i} 'content' must be a string", path=where)
    return messages


def _render_chat(tokenizer, messages: list[dict], where: str) -> tuple[str, list[tuple[int, int]]]:
    """Rendered text and the character spans of assistant targets (content + closing tag)."""
    add_prompt = messages[-1]["role"] != "assistant"
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_prompt)
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        head = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (text.startswith(upto) and upto.startswith(head)):
            raise DataError("the chat template does not render conversations prefix by prefix", path=where)
        spans.append((len(head), len(upto.rstrip("\n"))))
    return text, spans


def _tokenize(tokenizer, text: str, spans: list[tuple[int, int]] | None) -> tuple[list[int], list[int]]:
    # verbose=False: transformers' own "longer than the maximum" warning would be a second line beside
    # the DataError that load_dataset raises for an over-long line (it checks the length itself)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids = list(enc["input_ids"])
    if spans is None:
        return ids, [0] + [1] * (len(ids) - 1)
    targets = [int(any(a <= start < b for a, b in spans)) for start, _ in enc["offset_mapping"]]
    if targets:
        targets[0] = 0  # the first token has no predecessor
    return ids, targets


def parse_line(tokenizer, raw: str, where: str, max_len: int) -> Example:
    """One JSONL line -> :class:`Example` (``DataError`` naming ``where`` on any problem)."""
    try:
        obj = json.loads(raw)
    except ValueError as err:
        raise DataError(f"not valid JSON: {err.msg}", path=where) from None
    if not isinstance(obj, dict) or ("messages" in obj) == ("text" in obj):
        raise DataError("a line must be an object with exactly one of 'messages' or 'text'", path=where)
    unknown = set(obj) - {"messages", "text", "label"}
    if unknown:
        raise DataError(f"unknown keys {sorted(unknown)}", path=where)
    label = obj.get("label")
    if label is not None and label not in SAFETY_CLASSES:
        raise DataError(f"unknown label {label!r}; expected one of {list(SAFETY_CLASSES)}", path=where)
    if "text" in obj:
        if not isinstance(obj["text"], str) or not obj["text"]:
            raise DataError("'text' must be a non-empty string", path=where)
        ids, targets = _tokenize(tokenizer, obj["text"], None)
    else:
        if not tokenizer.chat_template:
            raise DataError("a 'messages' line needs a chat template, and the checkpoint has none "
                            "(tokenizer_config.json, chat_template.jinja or chat_template.json)", path=where)
        text, spans = _render_chat(tokenizer, _check_messages(obj["messages"], where), where)
        ids, targets = _tokenize(tokenizer, text, spans)
    if not ids:
        raise DataError("the example has no tokens", path=where)
    if len(ids) > max_len:
        raise DataError(f"{len(ids)} tokens, longer than the model's context of {max_len}", path=where)
    index = None if label is None else SAFETY_CLASSES.index(label)
    return Example(tuple(ids), tuple(targets), index, where)


def load_dataset(path: str | Path, tokenizer, max_len: int) -> Dataset:
    """Read and tokenize a whole JSONL file (blank lines are skipped; at least one example)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("data file not found", path=path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text ({err.reason})", path=path) from None
    examples = [
        parse_line(tokenizer, raw, f"{path}:{number}", max_len)
        for number, raw in enumerate(lines, start=1)
        if raw.strip()
    ]
    if not examples:
        raise DataError("empty data file (no examples)", path=path)
    return Dataset(path, sha256_file(path), tuple(examples))
