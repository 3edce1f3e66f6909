"""The checkpoint's chat template: the one place it is read (the exporter's GGUF metadata, training).

Where a Hugging Face checkpoint keeps it, in the order transformers gives precedence: ``chat_template``
in ``tokenizer_config.json`` (a string, or a list of named templates of which ``default`` is taken), then
``chat_template.jinja`` (transformers 5 writes it), then ``chat_template.json`` (the hub layout of
Qwen2-VL-2B-Instruct, ``{"chat_template": "..."}``). A file that exists but cannot be read or holds no
template is a one-line :class:`~so8t.errors.CheckpointError` naming it; no template anywhere is ``None``
(the caller decides whether it needs one).
"""

from __future__ import annotations

import json
from pathlib import Path

from so8t.errors import CheckpointError

FILES = ("tokenizer_config.json", "chat_template.jinja", "chat_template.json")


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"unreadable chat template file: {err}", path=path) from err
    if not isinstance(value, dict):
        raise CheckpointError("expected a JSON object", path=path)
    return value


def _from_tokenizer_config(value, path: Path) -> str | None:
    if isinstance(value, list):  # named templates: take "default", else the first
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        value = named.get("default") or next(iter(named.values()), None)
    if value is not None and not isinstance(value, str):
        raise CheckpointError(f"chat_template is a {type(value).__name__}, not a string", path=path)
    return value or None


def read_chat_template(model_dir: str | Path, tokenizer_config: dict | None = None) -> str | None:
    """The chat template of the checkpoint at ``model_dir`` (module docstring), or None if it has none.
    ``tokenizer_config``: the parsed ``tokenizer_config.json`` when the caller has read it already."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / FILES[0]
    if tokenizer_config is None:
        tokenizer_config = _json(cfg_path) if cfg_path.is_file() else {}
    template = _from_tokenizer_config(tokenizer_config.get("chat_template"), cfg_path)
    if template:
        return template
    jinja = model_dir / FILES[1]
    if jinja.is_file():
        try:
            text = jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise CheckpointError(f"unreadable chat template: {err}", path=jinja) from err
        if not text.strip():
            raise CheckpointError("the chat template file is empty", path=jinja)
        return text
    as_json = model_dir / FILES[2]
    if as_json.is_file():
        template = _json(as_json).get("chat_template")
        if not isinstance(template, str) or not template.strip():
            raise CheckpointError("no 'chat_template' string in the file", path=as_json)
        return template
    return None
